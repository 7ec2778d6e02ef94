"""Status events a tenant's webhook subscriptions receive: their names, which status change
each one announces, and the document posted (the README's "Status webhooks" shows it).

A delivery's change is ``delivery.<status>`` (``delivery.sent``, ``delivery.bounced``, ...);
a notification's, once its deliveries settle it, ``notification.<status>``. A subscription
names the events it wants, or ``*`` for all of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from herald.domain.models import DeliveryStatus, NotificationStatus

ALL = "*"

#: The delivery statuses announced: where a delivery ended up, or what a receipt said of it
#: (not the steps on the way: PENDING, PROCESSING, RETRY_PENDING).
DELIVERY_EVENTS: dict[DeliveryStatus, str] = {
    status: f"delivery.{status.value.lower()}"
    for status in (
        DeliveryStatus.SENT,
        DeliveryStatus.DELIVERED,
        DeliveryStatus.BOUNCED,
        DeliveryStatus.COMPLAINED,
        DeliveryStatus.REJECTED,
        DeliveryStatus.UNDELIVERED,
        DeliveryStatus.FAILED,
        DeliveryStatus.DEAD_LETTERED,
        DeliveryStatus.SKIPPED,
    )
}

#: The notification statuses announced: every one its deliveries can settle it in.
NOTIFICATION_EVENTS: dict[NotificationStatus, str] = {
    status: f"notification.{status.value.lower()}"
    for status in (
        NotificationStatus.SENT,
        NotificationStatus.DELIVERED,
        NotificationStatus.PARTIALLY_SENT,
        NotificationStatus.FAILED,
        NotificationStatus.SKIPPED,
    )
}

EVENT_TYPES: frozenset[str] = frozenset([*DELIVERY_EVENTS.values(), *NOTIFICATION_EVENTS.values()])


def type_problem(name: str) -> str | None:
    """Why ``name`` cannot be subscribed to, or None."""
    if name == ALL or name in EVENT_TYPES:
        return None
    return f"{name[:100]!r} is not an event: use * or one of {', '.join(sorted(EVENT_TYPES))}"


def wants(subscribed: Iterable[str], event_type: str) -> bool:
    return any(name in (ALL, event_type) for name in subscribed)


def document(
    event_id: str,
    event_type: str,
    tenant: str,
    created_at: datetime,
    data: Mapping[str, Any],
) -> bytes:
    """The body posted: compact with sorted keys, the same bytes on every attempt (so a
    receiver may dedupe on ``id`` and the signature covers exactly what it reads)."""
    body = {
        "id": event_id,
        "type": event_type,
        # Signed with the rest: a signature made for one tenant never vouches for another's.
        "tenant": tenant,
        "created_at": created_at.isoformat().replace("+00:00", "Z"),
        "data": dict(data),
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
