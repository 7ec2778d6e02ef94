"""Turn an outbound message into an RFC 5322 email."""

from __future__ import annotations

from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from herald.channels.base import OutboundMessage
from herald.clock import utcnow


def sender_domain(sender: str) -> str:
    _, address = parseaddr(sender)
    return address.rpartition("@")[2] or "herald.invalid"


def message_id(delivery_id: str, domain: str) -> str:
    """Stable per delivery, so a resend after a crash can be recognised as the same mail."""
    return f"<{delivery_id}@{domain}>"


def build_email(message: OutboundMessage, sender: str) -> EmailMessage:
    """Raises ValueError for header values that could inject headers (CR/LF)."""
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = Address(addr_spec=message.recipient)
    mail["Subject"] = message.subject or ""
    mail["Date"] = format_datetime(utcnow())
    mail["Message-ID"] = message_id(message.delivery_id, sender_domain(sender))
    mail["X-Herald-Notification-Id"] = message.notification_id
    mail["X-Herald-Delivery-Id"] = message.delivery_id
    mail.set_content(message.body)
    return mail
