"""Mailgun's webhooks as receipts.

Mailgun posts one event per request as JSON: ``{"signature": {"timestamp", "token",
"signature"}, "event-data": {...}}``, where ``signature`` is the hex HMAC-SHA256, keyed with
the webhook signing key, of the timestamp followed by the token. The event's
``user-variables`` carry ``herald_delivery_id``, naming the delivery; an event without it was
not sent by Herald.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from herald.channels.mailgun import DELIVERY_VARIABLE
from herald.domain.receipts import Receipt, ReceiptKind

_EVENTS = {
    "delivered": ReceiptKind.DELIVERED,
    "complained": ReceiptKind.COMPLAINED,
}
_BOUNCES = {"bounce", "suppress-bounce"}  # a failure's reason that says the address is bad


def verified(signing_key: str, post: Any) -> bool:
    """Whether Mailgun signed this post (compared in constant time)."""
    signature = post.get("signature") if isinstance(post, dict) else None
    if not isinstance(signature, dict):
        return False
    timestamp, token, given = (signature.get(k) for k in ("timestamp", "token", "signature"))
    if not all(isinstance(v, str) for v in (timestamp, token, given)):
        return False
    expected = hmac.new(
        signing_key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected.encode(), str(given).encode("utf-8", "replace"))


def receipts(provider: str, post: dict[str, Any]) -> list[Receipt]:
    """The receipt a (verified) post carries, if it is about a message Herald sent."""
    event = post.get("event-data")
    if not isinstance(event, dict):
        raise ValueError("event-data must be an object")
    variables = event.get("user-variables")
    delivery_id = variables.get(DELIVERY_VARIABLE) if isinstance(variables, dict) else None
    name = event.get("event")
    if not isinstance(delivery_id, str) or not isinstance(name, str):
        return []
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
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id:
        event_id = hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()
    code = status.get("code")
    said = status.get("description") or status.get("message") or event.get("reason")
    return [
        Receipt(
            provider=provider,
            key=event_id[:255],
            delivery_id=delivery_id[:36],
            kind=kind,
            code=str(code) if code else name,
            detail=f"Mailgun {name}" + (f": {said}" if said else ""),
            suppress="unsubscribe" if name == "unsubscribed" else None,
            channel="email",
        )
    ]
