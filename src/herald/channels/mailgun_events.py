"""Mailgun's webhooks as receipts.

Mailgun posts one event per request as JSON: ``{"signature": {"timestamp", "token",
"signature"}, "event-data": {...}}``, where ``signature`` is the hex HMAC-SHA256, keyed with
the webhook signing key, of the timestamp followed by the token. The event's
``user-variables`` carry ``herald_delivery_id``, naming the delivery; an event without it was
not sent by Herald.

The signature does not cover the event, so a signed (timestamp, token) must not be taken
twice: the token is the receipt's key (the same token again is a duplicate, whatever event it
comes with), and a timestamp older than ``MAX_AGE`` (or from the future) is refused. Mailgun
retries a failed post for 8 hours.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from herald.channels.mailgun import DELIVERY_VARIABLE
from herald.domain.receipts import Receipt, ReceiptKind, delivery_named

_EVENTS = {
    "delivered": ReceiptKind.DELIVERED,
    "complained": ReceiptKind.COMPLAINED,
}
_BOUNCES = {"bounce", "suppress-bounce"}  # a failure's reason that says the address is bad


MAX_AGE = 12 * 3600  # seconds: Mailgun's retries, and some room


def verified(signing_key: str, post: Any, now: float) -> bool:
    """Whether Mailgun signed this post (compared in constant time), recently."""
    signature = post.get("signature") if isinstance(post, dict) else None
    if not isinstance(signature, dict):
        return False
    timestamp, token, given = (signature.get(k) for k in ("timestamp", "token", "signature"))
    if not (isinstance(timestamp, str) and isinstance(token, str) and isinstance(given, str)):
        return False
    if not timestamp.isdigit() or not 0 <= now - int(timestamp[:12]) <= MAX_AGE:
        return False
    signed = f"{timestamp}{token}".encode("utf-8", "replace")
    expected = hmac.new(signing_key.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def receipts(provider: str, post: dict[str, Any]) -> list[Receipt]:
    """The receipt a (verified) post carries, if it is about a message Herald sent."""
    event = post.get("event-data")
    if not isinstance(event, dict):
        raise ValueError("event-data must be an object")
    variables = event.get("user-variables")
    delivery_id = (
        delivery_named(variables.get(DELIVERY_VARIABLE)) if isinstance(variables, dict) else None
    )
    name = event.get("event")
    if delivery_id is None or not isinstance(name, str):
        return []  # not a message Herald sent
    status = event.get("delivery-status")
    status = status if isinstance(status, dict) else {}
    kind = _EVENTS.get(name, ReceiptKind.PROGRESS)
    if name == "failed":
        if event.get("severity") == "temporary":
            kind = ReceiptKind.SOFT_BOUNCE
        else:
            kind = (
                ReceiptKind.BOUNCED if event.get("reason") in _BOUNCES else ReceiptKind.UNDELIVERED
            )
    token = post["signature"]["token"]  # verified: see the module docstring
    code = status.get("code")
    said = status.get("description") or status.get("message") or event.get("reason")
    return [
        Receipt(
            provider=provider,
            key=f"token:{token}"[:255],
            delivery_id=delivery_id,
            kind=kind,
            code=str(code) if code else name,
            detail=f"Mailgun {name}" + (f": {said}" if said else ""),
            suppress="unsubscribe" if name == "unsubscribed" else None,
            channel="email",
        )
    ]
