"""A staged batch's payload: its accepted notifications as planned, in compact JSON.

What intake made of each item (the record it answered with: ids, content, status; and of its
plan what routing needs) is kept, not the request: a template edited or a user's contact point
changed before the batch is expanded does not change what the 202 described. One JSON array per
notification, its fields in the order of ``_NOTIFICATION`` (encoded a thousand at a time in a fifth
of a millisecond).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic_core import from_json

from herald import json_bytes
from herald.domain.messages import Content
from herald.domain.models import DeliveryStatus, NotificationStatus
from herald.pipeline.planning import NotificationSpec, Plan, PlannedDelivery
from herald.store.notifications import DeliveryRecord, NotificationRecord

Planned = tuple[NotificationRecord, Plan]

_NOTIFICATION = [
    *("id", "user_id", "recipient", "subject", "body", "status", "category", "priority"),
    *("template", "event_type", "send_at", "collapse_key", "traceparent", "deliveries"),
]


def encode(planned: list[Planned]) -> bytes:
    return json_bytes.dumps([_item(record, plan) for record, plan in planned])


def _item(record: NotificationRecord, plan: Plan) -> list[Any]:
    return [
        record.id,
        record.user_id,
        record.recipient,
        record.subject,
        record.body,
        record.status,
        record.category,
        record.priority,
        record.template,
        record.event_type,
        record.send_at,
        record.collapse_key,
        plan.spec.traceparent,
        [[d.id, d.channel, d.recipient, d.content, d.next_attempt_at] for d in record.deliveries],
    ]


def decode(
    payload: bytes, tenant: str, created_at: datetime, written_at: datetime
) -> list[Planned]:
    """The records and plans ``encode`` was given (a plan as far as routing reads it), as
    written out at ``written_at``: their ``updated_at``, so that the recovery sweep, which
    re-queues deliveries PENDING for minutes, does not take a batch written out late for one
    stuck (and send it around the router)."""
    return [_planned(item, tenant, created_at, written_at) for item in from_json(payload)]


def _planned(item: list[Any], tenant: str, created_at: datetime, written_at: datetime) -> Planned:
    f = dict(zip(_NOTIFICATION, item, strict=True))
    send_at = _time(f["send_at"])
    deliveries = [
        DeliveryRecord(
            id=delivery_id,
            notification_id=f["id"],
            channel=channel,
            recipient=recipient,
            status=DeliveryStatus.PENDING,
            attempts=0,
            last_error=None,
            provider=None,
            provider_message_id=None,
            next_attempt_at=_time(next_attempt_at),
            created_at=created_at,
            updated_at=written_at,
            last_attempt_at=None,
            sent_at=None,
            content=content,
        )
        for delivery_id, channel, recipient, content, next_attempt_at in f["deliveries"]
    ]
    record = NotificationRecord(
        id=f["id"],
        tenant_id=tenant,
        user_id=f["user_id"],
        recipient=f["recipient"],
        subject=f["subject"],
        body=f["body"],
        status=NotificationStatus(f["status"]),
        created_at=created_at,
        updated_at=written_at,
        completed_at=None,
        category=f["category"],
        priority=f["priority"],
        template=f["template"],
        event_type=f["event_type"],
        send_at=send_at,
        collapse_key=f["collapse_key"],
        deliveries=deliveries,
    )
    spec = NotificationSpec(
        tenant_id=tenant,
        user_id=f["user_id"],
        priority=f["priority"],
        send_at=send_at,
        collapse_key=f["collapse_key"],
        event_type=f["event_type"],
        traceparent=f["traceparent"],
    )
    plan = Plan(
        spec=spec,
        deliveries=[
            PlannedDelivery(d.channel, d.recipient, Content.model_validate(d.content))
            for d in deliveries
        ],
        category=f["category"],
        template=f["template"],
    )
    return record, plan


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
