"""The Provider protocol: one module per provider implements it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from herald.tenancy import DEFAULT_TENANT


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One rendered message for one recipient on one channel.

    ``recipient`` is what the channel addresses: an email address (email), an E.164 phone
    number (sms), an FCM registration token (push), a Web Push subscription as JSON (webpush),
    a URL (webhook), an Apprise URL (apprise), a user id (inapp).
    """

    delivery_id: str  # stable across attempts: the provider's idempotency key where it takes one
    notification_id: str
    channel: str
    recipient: str
    subject: str | None  # email subject; the title of push, in-app and chat messages
    body: str  # plain text
    attempt: int
    html: str | None = None  # email's HTML alternative
    data: dict[str, Any] = field(default_factory=dict)  # the caller's data, JSON-serialisable
    headers: dict[str, str] = field(default_factory=dict)  # extra email headers
    user_id: str | None = None
    category: str | None = None
    priority: str = "normal"  # normal | high
    tenant_id: str = DEFAULT_TENANT


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
