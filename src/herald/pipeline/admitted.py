"""A notification intake has accepted: its plan, the ids given to it and its deliveries, and
when. Its record (the shape of its rows) is built only where it is written: a staged batch
(stages/intake.py) is answered and staged from these alone, and its records are built by the
expander, in another process, at delivery's pace (building a thousand had cost a fifth of the
API's time per batch).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from herald.domain.models import DeliveryStatus, NotificationStatus
from herald.pipeline.planning import Plan
from herald.store.notifications import DeliveryRecord, NotificationRecord


@dataclass(slots=True)
class Admitted:
    plan: Plan
    id: str
    delivery_ids: list[str]  # in the order of the plan's deliveries
    created_at: datetime
    _record: NotificationRecord | None = field(default=None, repr=False, compare=False)

    @property
    def tenant_id(self) -> str:
        return self.plan.spec.tenant_id

    @property
    def scheduled(self) -> bool:
        """Whether it waits for its ``send_at`` (one in the past is sent now)."""
        send_at = self.plan.spec.send_at
        return send_at is not None and send_at > self.created_at

    @property
    def status(self) -> NotificationStatus:
        return NotificationStatus.SCHEDULED if self.scheduled else NotificationStatus.PENDING

    @property
    def next_attempt_at(self) -> datetime | None:
        """Its deliveries' first: not claimable before then (an early duplicate job is
        dropped)."""
        return self.plan.spec.send_at if self.scheduled else None

    @property
    def record(self) -> NotificationRecord:
        """Its record, as stored: built once, when first asked for."""
        if self._record is None:
            self._record = _record_of(self)
        return self._record


def admit(plan: Plan, now: datetime, ids: Iterator[str]) -> Admitted:
    """``plan`` accepted at ``now``, with the next ids of ``ids``: its own, then its
    deliveries'."""
    notification_id = next(ids)
    return Admitted(plan, notification_id, [next(ids) for _ in plan.deliveries], now)


def _record_of(admitted: Admitted) -> NotificationRecord:
    plan, now = admitted.plan, admitted.created_at
    spec = plan.spec
    first = plan.deliveries[0].content
    next_attempt_at = admitted.next_attempt_at
    return NotificationRecord(
        id=admitted.id,
        tenant_id=spec.tenant_id,
        user_id=spec.user_id,
        recipient=plan.primary_recipient,
        subject=first.subject,
        body=first.body,
        status=admitted.status,
        created_at=now,
        updated_at=now,
        completed_at=None,
        category=plan.category,
        priority=spec.priority,
        template=plan.template,
        event_type=spec.event_type,
        send_at=spec.send_at,
        collapse_key=spec.collapse_key,
        deliveries=[
            DeliveryRecord(
                id=delivery_id,
                notification_id=admitted.id,
                channel=d.channel,
                recipient=d.recipient,
                status=DeliveryStatus.PENDING,
                attempts=0,
                last_error=None,
                provider=None,
                provider_message_id=None,
                next_attempt_at=next_attempt_at,
                created_at=now,
                updated_at=now,
                last_attempt_at=None,
                sent_at=None,
                content=d.content.json_dict(),
            )
            for delivery_id, d in zip(admitted.delivery_ids, plan.deliveries, strict=True)
        ],
    )
