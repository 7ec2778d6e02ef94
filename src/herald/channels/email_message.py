"""Turn an outbound message into an RFC 5322 email."""

from __future__ import annotations

from collections.abc import Iterable
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime, parseaddr
from typing import Final

from herald.channels.base import OutboundMessage
from herald.clock import utcnow
from herald.domain.headers import is_field_name, is_single_line
from herald.errors import PermanentDeliveryError

# Extra headers may not address the mail, nor replace a header Herald sets itself.
_RESERVED: Final = frozenset(
    {
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "return-path",
        "mime-version",
        "x-herald-notification-id",
        "x-herald-delivery-id",
    }
)
_RESERVED_PREFIXES: Final = ("resent-", "content-")
# Angle-bracketed URLs (RFC 2369, RFC 8058): folded at 78 columns, a long one would be written
# as RFC 2047 encoded-words, which mail clients do not decode there (a broken one-click link).
# They are written as they are, on one line, when that fits RFC 5322's 998 characters.
_UNFOLDED: Final = frozenset({"list-unsubscribe", "list-unsubscribe-post"})
_MAX_LINE: Final = 998


def sender_domain(sender: str) -> str:
    _, address = parseaddr(sender)
    return address.rpartition("@")[2] or "herald.invalid"


def message_id(delivery_id: str, domain: str) -> str:
    """Stable per delivery, so a resend after a crash can be recognised as the same mail."""
    return f"<{delivery_id}@{domain}>"


def check_headers(fields: Iterable[tuple[str, str | None]]) -> None:
    """Raise PermanentDeliveryError for a value with a line break or NUL (it would let
    whoever wrote it add headers or recipients of their own), or a malformed header name."""
    for name, value in fields:
        if not is_field_name(name):
            raise PermanentDeliveryError(f"invalid email header name {name!r}")
        if value is not None and not is_single_line(value):
            raise PermanentDeliveryError(f"email header {name} contains a line break or NUL")


def _extra_headers(headers: dict[str, str]) -> dict[str, str]:
    for name in headers:
        lowered = name.lower()
        if lowered in _RESERVED or lowered.startswith(_RESERVED_PREFIXES):
            raise PermanentDeliveryError(f"email header {name!r} may not be set by a message")
    return headers


class _OneLine(str):
    """A header value the email generator writes as it is: no folding, no encoded-words."""

    name: str

    def fold(self, *, policy: Policy) -> str:
        return f"{self.name}: {self}{policy.linesep}"


def _header_value(name: str, value: str) -> str:
    if name.lower() in _UNFOLDED and value.isascii() and len(name) + 2 + len(value) <= _MAX_LINE:
        one_line = _OneLine(value)
        one_line.name = name  # the email package keeps a value with a matching .name as is
        return one_line
    return value


def _address(addr_spec: str) -> Address:
    local, _, domain = addr_spec.rpartition("@")
    if local.isascii():
        return Address(addr_spec=addr_spec)
    # Non-ASCII before the @ (accepted with HERALD_SMTP_UTF8): the email package's parser
    # refuses it, so it is built from its parts; aiosmtplib then sends it with SMTPUTF8.
    return Address(username=local, domain=domain)


def build_email(message: OutboundMessage, sender: str) -> EmailMessage:
    """Raises PermanentDeliveryError for any header value that could inject headers, before
    anything is sent; ValueError for an address the email package cannot parse."""
    extra = _extra_headers(message.headers)
    check_headers(
        [
            ("From", sender),
            ("To", message.recipient),
            ("Subject", message.subject),
            ("X-Herald-Notification-Id", message.notification_id),
            ("X-Herald-Delivery-Id", message.delivery_id),
            *extra.items(),
        ]
    )
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = _address(message.recipient)
    mail["Subject"] = message.subject or ""
    mail["Date"] = format_datetime(utcnow())
    mail["Message-ID"] = message_id(message.delivery_id, sender_domain(sender))
    mail["X-Herald-Notification-Id"] = message.notification_id
    mail["X-Herald-Delivery-Id"] = message.delivery_id
    for name, value in extra.items():
        mail[name] = _header_value(name, value)
    mail.set_content(message.body)
    if message.html:
        mail.add_alternative(message.html, subtype="html")
    return mail
