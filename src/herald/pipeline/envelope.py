"""Wrap a domain message for the bus: JSON body plus headers other consumers can route on."""

from __future__ import annotations

from herald.bus.base import OutgoingMessage
from herald.domain.messages import (
    DeadLettered,
    DeliveryJob,
    DeliveryStatusChanged,
    NotificationRequested,
    encode,
)

AnyMessage = NotificationRequested | DeliveryJob | DeliveryStatusChanged | DeadLettered


def envelope(
    topic: str, key: str, message: AnyMessage, extra: dict[str, str] | None = None
) -> OutgoingMessage:
    headers = {
        "content-type": "application/json",
        "herald-type": message.type,
        "herald-schema-version": str(message.schema_version),
    }
    if message.notification_id is not None:
        headers["herald-notification-id"] = message.notification_id
    if (
        isinstance(message, DeliveryJob | DeliveryStatusChanged | DeadLettered)
        and message.delivery_id
    ):
        headers["herald-delivery-id"] = message.delivery_id
    if isinstance(message, DeliveryJob):
        headers["herald-attempt"] = str(message.attempt)
    headers.update(extra or {})
    return OutgoingMessage(topic=topic, key=key, value=encode(message), headers=headers)
