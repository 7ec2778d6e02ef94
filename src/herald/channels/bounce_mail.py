"""Mail that comes back about an email Herald sent, as receipts: delivery status notifications
(RFC 3464, ``multipart/report; report-type=delivery-status``) and complaints in the Abuse
Reporting Format (RFC 5965, ``report-type=feedback-report``).

The delivery is the one the envelope recipient names (a VERP return path, domain/verp), else
the one the returned headers name (``X-Herald-Delivery-Id``, or the ``Message-ID`` Herald gave
it). Anything else that reaches the return path (an out-of-office reply, spam) is no receipt.

A failure whose status says the address is bad (5.1.x: no such mailbox or domain; 5.2.1:
mailbox disabled) is a hard bounce; another permanent failure (a full mailbox, content refused)
leaves the message undelivered without suppressing the address; a delay or a 4.x.x failure is
a soft bounce.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from collections.abc import Sequence
from email.message import Message

from herald.domain import verp
from herald.domain.receipts import DELIVERY_ID, Receipt, ReceiptKind, delivery_named
from herald.observability.logging import get_logger

log = get_logger(__name__)
SOURCE = "mail"  # the receipts' provider: what came back by mail
_MESSAGE_ID = re.compile(rf"<({DELIVERY_ID.pattern})@[^>]*>")
_HARD = ("5.1.", "5.2.1")
_ACTIONS = {
    "delivered": ReceiptKind.DELIVERED,
    "delayed": ReceiptKind.SOFT_BOUNCE,
    "relayed": ReceiptKind.PROGRESS,
    "expanded": ReceiptKind.PROGRESS,
}


def receipts_in(
    raw: bytes, *, envelope_recipients: Sequence[str] = (), bounce_domain: str | None = None
) -> list[Receipt]:
    """The receipt a message carries: none if it is no report about a delivery of ours, or
    cannot be read (anyone can send mail: nothing in it may raise), one at most (a report
    about one message, whose return path names one delivery)."""
    try:
        return _receipts_in(raw, envelope_recipients, bounce_domain)[:1]
    except Exception as exc:
        log.warning("bounce_mail.unreadable", error=f"{type(exc).__name__}: {exc}"[:300])
        return []


def _receipts_in(
    raw: bytes, envelope_recipients: Sequence[str], bounce_domain: str | None
) -> list[Receipt]:
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    report = message.get_param("report-type", header="content-type")
    if message.get_content_type() != "multipart/report" or report not in (
        "delivery-status",
        "feedback-report",
    ):
        return []
    delivery_id = _delivery(message, envelope_recipients, bounce_domain)
    if delivery_id is None:
        return []
    identity = _identity(message, raw)
    if report == "feedback-report":
        return [_complaint(message, delivery_id, identity)]
    return [
        _status(fields, delivery_id, identity)
        for fields in _recipient_blocks(message)
        if _text(fields, "Action")
    ]


def _delivery(
    message: Message, envelope_recipients: Sequence[str], bounce_domain: str | None
) -> str | None:
    if bounce_domain is not None:
        for address in [*envelope_recipients, _text(message, "To")]:
            found = verp.delivery_of(address, bounce_domain)
            if found is not None:
                return found
    returned = _returned_headers(message)
    if returned is None:
        return None
    named = delivery_named(_text(returned, "X-Herald-Delivery-Id").strip())
    if named is not None:
        return named
    match = _MESSAGE_ID.search(_text(returned, "Message-ID"))
    return match.group(1) if match else None


def _text(message: Message, name: str) -> str:
    """A header's value as text: an 8-bit one (a non-English server's diagnostic) comes as
    a Header object from the parser; NUL, which no database column takes, removed."""
    value = message.get(name)
    if value is None:
        return ""
    text = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text.replace("\x00", "")


def _returned_headers(message: Message) -> Message | None:
    """The headers of the message the report is about (``message/rfc822`` or
    ``text/rfc822-headers``, the report's third part)."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if kind == "text/rfc822-headers":
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                return email.message_from_bytes(text, policy=email.policy.compat32)
    return None


def _recipient_blocks(message: Message) -> list[Message]:
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status":
            blocks = part.get_payload()
            if isinstance(blocks, list):
                return [b for b in blocks[1:] if isinstance(b, Message)]
    return []


def _identity(message: Message, raw: bytes) -> str:
    """What makes this report itself (the same report delivered twice has the same)."""
    message_id = _text(message, "Message-ID").strip()
    return message_id or hashlib.sha256(raw).hexdigest()[:32]


def _status(fields: Message, delivery_id: str, identity: str) -> Receipt:
    action = _text(fields, "Action").strip().lower()
    status = _text(fields, "Status").strip().split()[0:1]
    code = status[0] if status else None
    if action == "failed":
        if code is not None and code.startswith("4."):
            kind = ReceiptKind.SOFT_BOUNCE
        elif code is not None and code.startswith(_HARD):
            kind = ReceiptKind.BOUNCED
        else:
            kind = ReceiptKind.UNDELIVERED
    else:
        kind = _ACTIONS.get(action, ReceiptKind.PROGRESS)
    detail = " ".join((_text(fields, "Diagnostic-Code") or action).split())
    recipient = _text(fields, "Final-Recipient").strip()
    return Receipt(
        provider=SOURCE,
        key=f"dsn:{identity}:{recipient}:{action}:{code or ''}"[:255],
        delivery_id=delivery_id,
        kind=kind,
        code=code,
        detail=detail[:1000],
        channel="email",
    )


def _complaint(message: Message, delivery_id: str, identity: str) -> Receipt:
    feedback = "abuse"
    for part in message.walk():
        if part.get_content_type() == "message/feedback-report":
            # Parsed as a message whose header fields are the report's.
            fields = part.get_payload()
            if isinstance(fields, list) and fields and isinstance(fields[0], Message):
                feedback = (_text(fields[0], "Feedback-Type") or feedback).strip().lower()
    kind = ReceiptKind.PROGRESS if feedback == "not-spam" else ReceiptKind.COMPLAINED
    return Receipt(
        provider=SOURCE,
        key=f"arf:{identity}"[:255],
        delivery_id=delivery_id,
        kind=kind,
        code=feedback[:64],
        detail=f"complaint ({feedback})"[:1000],
        channel="email",
    )
