"""A staged batch's payload: its accepted notifications as planned, in compact JSON.

What intake made of each item (what it answered with: ids, content, status; and of its plan
what routing needs) is kept, not the request: a template edited or a user's contact point
changed before the batch is expanded does not change what the 202 described. Encoded from
what intake admitted; decoded as records (built here, in the expander's process) and plans.
One JSON array per notification, its fields in the order of ``_NOTIFICATION`` (encoded a
thousand at a time in a fifth of a millisecond); a delivery's content is null when it is the
notification's subject and body alone (``Content.plain``: every delivery of an inline request).
An expander older than this null cannot read such a payload (its batch waits, retried, until
an expander that can takes it): upgrade the expanding processes with the API, or first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic_core import from_json

from herald import json_bytes
from herald.domain.messages import Content
from herald.domain.models import DeliveryStatus, NotificationStatus
from herald.pipeline.admitted import Admitted
from herald.pipeline.planning import NotificationSpec, Plan, PlannedDelivery
from herald.store.notifications import DeliveryRecord, NotificationRecord

Planned = tuple[NotificationRecord, Plan]

_NOTIFICATION = [
    *("id", "user_id", "recipient", "subject", "body", "status", "category", "priority"),
    *("template", "event_type", "send_at", "collapse_key", "traceparent", "deliveries"),
]


def encode(accepted: list[Admitted]) -> bytes:
    return json_bytes.dumps([_item(a) for a in accepted])


def _item(admitted: Admitted) -> list[Any]:
    """Its record's fields (see admitted._record_of), from its plan."""
    plan = admitted.plan
    spec, first = plan.spec, plan.deliveries[0].content
    next_attempt_at = admitted.next_attempt_at
    subject, body = first.subject, first.body
    return [
        admitted.id,
        spec.user_id,
        plan.primary_recipient,
        subject,
        body,
        admitted.status._value_,
        plan.category,
        spec.priority,
        plan.template,
        spec.event_type,
        spec.send_at,
        spec.collapse_key,
        spec.traceparent,
        [
            [i, d.channel, d.recipient, _content(d.content, subject, body), next_attempt_at]
            for i, d in zip(admitted.delivery_ids, plan.deliveries, strict=True)
        ],
    ]


def _content(content: Content, subject: str | None, body: str) -> dict[str, Any] | None:
    """None for the notification's own subject and body alone."""
    if content.plain and content.body == body and content.subject == subject:
        return None
    return content.json_dict()


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
    plain = Content(subject=f["subject"], body=f["body"])  # a null content's
    contents = [
        plain if c is None else Content.model_validate(c) for _, _, _, c, _ in f["deliveries"]
    ]
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
            content=plain.json_dict() if content is None else content,
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
            PlannedDelivery(d.channel, d.recipient, content)
            for d, content in zip(deliveries, contents, strict=True)
        ],
        category=f["category"],
        template=f["template"],
    )
    return record, plan


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
