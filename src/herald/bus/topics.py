"""Topic names, in one place. Every name starts with the configured prefix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str = "herald."

    @property
    def requested(self) -> str:
        return f"{self.prefix}notifications.requested"

    @property
    def status(self) -> str:
        return f"{self.prefix}notifications.status"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}deadletter"

    @property
    def retry(self) -> str:
        """Kafka only: delivery jobs waiting for their next attempt (header herald-due-at)."""
        return f"{self.prefix}deliveries.retry"

    def deliveries(self, channel: str) -> str:
        return f"{self.prefix}deliveries.{channel}"

    def all(self, channels: list[str]) -> list[str]:
        return [self.requested, self.status, self.deadletter, self.retry] + [
            self.deliveries(c) for c in channels
        ]
