"""Turn an outbound message into the bytes of an RFC 5322 email, written directly.

Every value is checked first (no line break, no NUL, well-formed names), so the headers can be
written as they are: ASCII values as text folded at spaces, anything else as RFC 2047
encoded-words; bodies as 7bit text when they are plain ASCII, quoted-printable otherwise. The
stdlib ``email`` object model did the same at about ten times the CPU, re-parsing every header
it was given.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr
from functools import lru_cache
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
# as encoded-words, which mail clients do not decode there (a broken one-click link). They are
# written on one line when that fits RFC 5322's 998 characters, else folded between list items.
_LISTS: Final = frozenset({"list-unsubscribe", "list-unsubscribe-post"})
_MAX_LINE: Final = 998
_FOLD_AT: Final = 78
# What may stand in a header as it is: printable ASCII and tabs, and no text that a reader
# would take for the start of an encoded-word.
_PLAIN: Final = re.compile(r"[\t\x20-\x7e]*")
# A bare address as RFC 5322 writes it (dot-atom on both sides); anything else goes through
# the email package's parser, which refuses what is not an addr-spec.
_ATOM: Final = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_ADDRESS: Final = re.compile(rf"{_ATOM}(\.{_ATOM})*@[A-Za-z0-9.-]+")
_ENCODED_WORD_BYTES: Final = 45  # 60 base64 characters: an encoded-word of 72


@dataclass(frozen=True, slots=True)
class Email:
    """What an SMTP client sends: the envelope and the message's bytes (CRLF line ends)."""

    sender: str  # envelope MAIL FROM
    recipient: str  # envelope RCPT TO
    message_id: str
    data: bytes
    utf8: bool  # an address needs SMTPUTF8 (RFC 6531)


@lru_cache(maxsize=16)
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


def extra_headers(headers: dict[str, str]) -> dict[str, str]:
    for name in headers:
        lowered = name.lower()
        if lowered in _RESERVED or lowered.startswith(_RESERVED_PREFIXES):
            raise PermanentDeliveryError(f"email header {name!r} may not be set by a message")
    return headers


@lru_cache(maxsize=16)
def _from_header(sender: str) -> tuple[str, bytes]:
    """The envelope address and the From line of a configured sender (a display name may
    need encoding: the email package does it, once per sender)."""
    mail = EmailMessage()
    mail["From"] = sender
    line = mail["From"].fold(policy=SMTP).encode("ascii")
    return parseaddr(sender)[1], line


def _recipient(addr_spec: str) -> str:
    """The recipient as the To header and the envelope carry it; ValueError if it is not a
    bare address."""
    if _SIMPLE_ADDRESS.fullmatch(addr_spec):
        return addr_spec
    local, _, domain = addr_spec.rpartition("@")
    if local.isascii():
        return Address(addr_spec=addr_spec).addr_spec  # raises ValueError: not an addr-spec
    # Non-ASCII before the @ (accepted with HERALD_SMTP_UTF8): checked part by part, then sent
    # as UTF-8 with SMTPUTF8.
    return Address(username=local, domain=domain).addr_spec


def _encoded_words(value: str) -> list[str]:
    """``value`` as base64 encoded-words, none splitting a character."""
    words: list[str] = []
    chunk = bytearray()
    for char in value:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > _ENCODED_WORD_BYTES:
            words.append(_encoded_word(chunk))
            chunk.clear()
        chunk += encoded
    if chunk or not words:
        words.append(_encoded_word(chunk))
    return words


def _encoded_word(data: bytes | bytearray) -> str:
    return f"=?utf-8?b?{base64.b64encode(data).decode('ascii')}?="


def _fold(prefix: str, words: list[str], separator: str) -> str:
    """Join ``words`` onto lines of at most 78 columns where possible, continuing with a
    space; a line never breaks inside a word."""
    lines = [prefix + words[0]]
    for word in words[1:]:
        if len(lines[-1]) + len(separator) + len(word) <= _FOLD_AT:
            lines[-1] += separator + word
        else:
            lines[-1] += separator.rstrip()
            lines.append(" " + word)
    return "\r\n".join(lines) + "\r\n"


def _header(name: str, value: str) -> str:
    prefix = f"{name}: "
    if _PLAIN.fullmatch(value) and "=?" not in value:
        if name.lower() in _LISTS:
            if len(prefix) + len(value) <= _MAX_LINE:
                return prefix + value + "\r\n"
            return _fold(prefix, value.split(", "), ", ")
        words = value.split(" ")
        if len(prefix) + len(value) <= _FOLD_AT or not value.strip(" "):
            return prefix + value + "\r\n"
        if max(len(w) for w in words) + 1 <= _MAX_LINE:
            return _fold(prefix, words, " ")
    return _fold(prefix, _encoded_words(value), " ")


def _body(text: str) -> tuple[str, bytes]:
    """A text part's transfer encoding and its bytes, lines ending in CRLF (split where the
    email package splits them: CR, LF, CRLF)."""
    data = text.encode("utf-8")  # UnicodeEncodeError (a ValueError) for a lone surrogate
    lines = data.splitlines() or [b""]
    if data.isascii() and all(len(line) <= _MAX_LINE for line in lines):
        return "7bit", b"\r\n".join(lines) + b"\r\n"
    # Soft line breaks come out as "=\n" ("=" itself is always written "=3D").
    encoded = [binascii.b2a_qp(line).replace(b"=\n", b"=\r\n") for line in lines]
    return "quoted-printable", b"\r\n".join(encoded) + b"\r\n"


def _text_part(subtype: str, text: str) -> bytes:
    cte, data = _body(text)
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n'
    ).encode("ascii") + data


@lru_cache(maxsize=2)
def _date(second: int) -> str:
    """The Date header's value (whole seconds), made once per second rather than per email."""
    return format_datetime(datetime.fromtimestamp(second, UTC))


def build_email(message: OutboundMessage, sender: str) -> Email:
    """Raises PermanentDeliveryError for any header value that could inject headers, before
    anything is sent; ValueError for an address that is not a bare address."""
    extra = extra_headers(message.headers)
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
    envelope_from, from_line = _from_header(sender)
    recipient = _recipient(message.recipient)
    utf8 = not recipient.isascii()
    mid = message_id(message.delivery_id, sender_domain(sender))
    head = [
        f"To: {recipient}\r\n" if utf8 else _header("To", recipient),
        _header("Subject", message.subject or ""),
        f"Date: {_date(int(utcnow().timestamp()))}\r\n",
        f"Message-ID: {mid}\r\n",
        _header("X-Herald-Notification-Id", message.notification_id),
        _header("X-Herald-Delivery-Id", message.delivery_id),
        *(_header(name, value) for name, value in extra.items()),
        "MIME-Version: 1.0\r\n",
    ]
    if message.html:
        boundary = f"==============={secrets.token_hex(16)}=="
        head.append(f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n')
        delimiter = f"--{boundary}\r\n".encode("ascii")
        body = (
            delimiter
            + _text_part("plain", message.body)
            + delimiter
            + _text_part("html", message.html)
            + f"--{boundary}--\r\n".encode("ascii")
        )
    else:
        body = _text_part("plain", message.body)
    data = from_line + "".join(head).encode("utf-8" if utf8 else "ascii") + body
    return Email(envelope_from, recipient, mid, data, utf8)
