"""The Provider protocol: one module per provider implements it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    delivery_id: str  # stable across attempts: the provider's idempotency key where it takes one
    notification_id: str
    channel: str
    recipient: str
    subject: str | None
    body: str
    attempt: int


@dataclass(frozen=True, slots=True)
class SendResult:
    provider: str
    provider_message_id: str | None = None


class Provider(Protocol):
    """Sends one message; raises TransientDeliveryError or PermanentDeliveryError on failure."""

    name: str
    channel: str
    #: How many sends it can carry at once (e.g. its connection pool).
    concurrency: int

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, message: OutboundMessage) -> SendResult: ...
