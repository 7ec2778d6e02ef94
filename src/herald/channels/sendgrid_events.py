"""SendGrid's Event Webhook as receipts.

SendGrid posts a JSON array of events, signed (the Signed Event Webhook): ECDSA over P-256
with SHA-256 of the timestamp header followed by the raw body, base64 in
``X-Twilio-Email-Event-Webhook-Signature``, checked against the verification key SendGrid shows
(a base64 public key). Each event carries the custom arguments of its message, so
``herald_delivery_id`` names the delivery; an event without it was not sent by Herald.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from herald.channels.sendgrid import DELIVERY_ARG
from herald.domain.receipts import Receipt, ReceiptKind, delivery_named

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

_EVENTS = {
    "delivered": ReceiptKind.DELIVERED,
    "deferred": ReceiptKind.SOFT_BOUNCE,
    "dropped": ReceiptKind.REJECTED,
    "spamreport": ReceiptKind.COMPLAINED,
}
_UNSUBSCRIBES = {"unsubscribe", "group_unsubscribe"}


def verified(key: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Whether SendGrid signed ``timestamp`` + ``body`` with the key's private half."""
    try:
        public = load_der_public_key(base64.b64decode(key, validate=True))
        signed = base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error):
        return False
    if not isinstance(public, ec.EllipticCurvePublicKey):
        return False
    try:
        public.verify(signed, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def receipts(provider: str, events: Any) -> list[Receipt]:
    """The receipts in a posted array of events (ValueError if it is not one)."""
    if not isinstance(events, list):
        raise ValueError("the body must be a JSON array of events")
    found = []
    for event in events:
        if not isinstance(event, dict):
            raise ValueError("each event must be a JSON object")
        delivery_id = delivery_named(event.get(DELIVERY_ARG))
        name = event.get("event")
        if delivery_id is None:
            continue  # not a message Herald sent
        if isinstance(name, str):
            found.append(_receipt(provider, delivery_id, name, event))
    return found


def _receipt(provider: str, delivery_id: str, name: str, event: dict[str, Any]) -> Receipt:
    kind = _EVENTS.get(name, ReceiptKind.PROGRESS)
    if name == "bounce":
        # "blocked": the receiving server refused this message (content, reputation), not
        # the address.
        kind = ReceiptKind.UNDELIVERED if event.get("type") == "blocked" else ReceiptKind.BOUNCED
    event_id = event.get("sg_event_id")
    if not isinstance(event_id, str) or not event_id:
        event_id = hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()
    status, reason = event.get("status"), event.get("reason") or event.get("response")
    return Receipt(
        provider=provider,
        key=f"{event_id}"[:255],
        delivery_id=delivery_id,
        kind=kind,
        code=str(status) if status else name,
        detail=f"SendGrid {name}" + (f": {reason}" if reason else ""),
        suppress="unsubscribe" if name in _UNSUBSCRIBES else None,
        channel="email",
    )
