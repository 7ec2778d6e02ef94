"""Email to the log instead of a mail server: for development without SMTP."""

from __future__ import annotations

from herald.channels.base import OutboundMessage, SendResult
from herald.channels.email_message import message_id, sender_domain
from herald.observability.logging import get_logger

log = get_logger(__name__)


class ConsoleEmailProvider:
    name = "console"
    channel = "email"
    concurrency = 64

    def __init__(self, *, sender: str) -> None:
        self.sender = sender

    async def start(self) -> None:
        log.warning("email.console_backend", hint="set HERALD_SMTP_URL to send real email")

    async def close(self) -> None:
        pass

    async def send(self, message: OutboundMessage) -> SendResult:
        mid = message_id(message.delivery_id, sender_domain(self.sender))
        log.info(
            "email.console",
            to=message.recipient,
            subject=message.subject,
            message_id=mid,
            body=message.body[:1000],
        )
        return SendResult(self.name, mid)
