"""Wrap a domain message for the bus: JSON body plus headers other consumers can route on."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from herald import json_bytes
from herald.bus.base import OutgoingMessage
from herald.domain.messages import (
    DeadLettered,
    DeliveryJob,
    DeliveryStatusChanged,
    NotificationRequested,
    StatusWebhookJob,
    encode,
    fields_of,
)

AnyMessage = (
    NotificationRequested | DeliveryJob | DeliveryStatusChanged | DeadLettered | StatusWebhookJob
)


def envelope(
    topic: str, key: str, message: AnyMessage, extra: dict[str, str] | None = None
) -> OutgoingMessage:
    headers = _headers(type(message), lambda name: getattr(message, name, None), extra)
    return OutgoingMessage(topic=topic, key=key, value=encode(message), headers=headers)


def envelope_fields(
    topic: str,
    key: str,
    model: type[AnyMessage],
    values: Mapping[str, Any],
    extra: dict[str, str] | None = None,
) -> OutgoingMessage:
    """``envelope(topic, key, model(**values), extra)`` for values Herald built itself, of the
    fields' types, without validating them (see encode_fields)."""
    fields = fields_of(model, values)
    value = json_bytes.dumps(fields)  # encode_fields(model, values), the fields worked out once
    return OutgoingMessage(
        topic=topic, key=key, value=value, headers=_headers(model, fields.get, extra)
    )


def _headers(
    model: type[AnyMessage], get: Callable[[str], Any], extra: dict[str, str] | None
) -> dict[str, str]:
    headers = {
        "content-type": "application/json",
        "herald-type": get("type"),
        "herald-schema-version": str(get("schema_version")),
    }
    if get("notification_id") is not None:
        headers["herald-notification-id"] = get("notification_id")
    if issubclass(model, DeliveryJob | DeliveryStatusChanged | DeadLettered) and get("delivery_id"):
        headers["herald-delivery-id"] = get("delivery_id")
    if issubclass(model, DeliveryJob | StatusWebhookJob):
        headers["herald-attempt"] = str(get("attempt"))
    headers.update(extra or {})
    return headers
