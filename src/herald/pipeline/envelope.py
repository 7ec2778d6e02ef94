"""Wrap a domain message for the bus: JSON body plus headers other consumers can route on."""

from __future__ import annotations

from herald.bus.base import OutgoingMessage
from herald.domain.messages import DeliveryJob, DeliveryStatusChanged, NotificationRequested, encode

AnyMessage = NotificationRequested | DeliveryJob | DeliveryStatusChanged


def envelope(topic: str, key: str, message: AnyMessage) -> OutgoingMessage:
    headers = {
        "content-type": "application/json",
        "herald-type": message.type,
        "herald-schema-version": str(message.schema_version),
        "herald-notification-id": message.notification_id,
    }
    if isinstance(message, DeliveryJob | DeliveryStatusChanged):
        headers["herald-delivery-id"] = message.delivery_id
    if isinstance(message, DeliveryJob):
        headers["herald-attempt"] = str(message.attempt)
    return OutgoingMessage(topic=topic, key=key, value=encode(message), headers=headers)
