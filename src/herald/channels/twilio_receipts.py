"""Twilio's status callbacks as receipts.

Twilio posts one callback per status a message passes through (queued, sent, delivered, ...),
each signed (channels/twilio_signature). The final ones map onto the delivery states; an
``ErrorCode`` says why a message failed: a number that does not exist or cannot take texts
is a hard bounce (suppressed), a recipient who replied STOP an unsubscribe.
"""

from __future__ import annotations

from collections.abc import Mapping

from herald.domain.receipts import Receipt, ReceiptKind

_STATUSES = {
    "delivered": ReceiptKind.DELIVERED,
    "read": ReceiptKind.DELIVERED,  # WhatsApp's "read" comes after delivered
    "undelivered": ReceiptKind.UNDELIVERED,
    "failed": ReceiptKind.REJECTED,
    "canceled": ReceiptKind.REJECTED,
}
# Error codes that say the number itself is bad (twilio.com/docs/api/errors).
_BAD_NUMBER = {
    "21211",  # invalid 'To' phone number
    "21614",  # 'To' number is not a valid mobile number
    "30005",  # unknown destination handset
    "30006",  # landline or unreachable carrier
}
_UNSUBSCRIBED = "21610"  # the recipient replied STOP: Twilio refuses to text them


def receipt(provider: str, delivery_id: str, form: Mapping[str, str]) -> Receipt:
    """The receipt a callback's form fields make (``MessageSid``, ``MessageStatus``,
    ``ErrorCode``); raises ValueError naming a missing field."""
    sid, status = form.get("MessageSid") or form.get("SmsSid"), form.get("MessageStatus")
    if not sid:
        raise ValueError("MessageSid")
    if not status:
        raise ValueError("MessageStatus")
    code = form.get("ErrorCode") or None
    kind = _STATUSES.get(status, ReceiptKind.PROGRESS)
    if code in _BAD_NUMBER and kind in (ReceiptKind.UNDELIVERED, ReceiptKind.REJECTED):
        kind = ReceiptKind.BOUNCED
    return Receipt(
        provider=provider,
        key=f"{sid}:{status}:{code or ''}",
        delivery_id=delivery_id,
        kind=kind,
        code=code,
        detail=f"Twilio {status}",
        suppress="unsubscribe" if code == _UNSUBSCRIBED else None,
        channel="sms",
    )
