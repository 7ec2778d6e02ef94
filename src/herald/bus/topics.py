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
    def status_webhooks(self) -> str:
        """Status events on their way to tenants' webhook subscriptions (key: notification)."""
        return f"{self.prefix}status_webhooks"

    @property
    def retry(self) -> str:
        """Kafka only: delivery jobs waiting for their next attempt (header herald-due-at)."""
        return f"{self.prefix}deliveries.retry"

    def deliveries(self, channel: str) -> str:
        return f"{self.prefix}deliveries.{channel}"

    def all(self, channels: list[str]) -> list[str]:
        return [self.requested, self.status, self.deadletter, self.retry, self.status_webhooks] + [
            self.deliveries(c) for c in channels
        ]

    def group(self, name: str) -> str:
        """A consumer group's name (groups share the topics' prefix)."""
        return f"{self.prefix}{name}"

    def consumer_groups(self, channels: list[str], *, retry: bool) -> dict[str, list[str]]:
        """The pipeline's consumer groups and their topics, for workers serving ``channels``
        (``retry``: on Kafka, where retries wait on a topic of their own)."""
        groups = {
            self.group("router"): [self.requested],
            self.group("status"): [self.status],
            self.group("status_webhooks"): [self.status_webhooks],
        }
        if retry:
            groups[self.group("retry")] = [self.retry]
        for channel in channels:
            groups[self.group(f"worker.{channel}")] = [self.deliveries(channel)]
        return groups
