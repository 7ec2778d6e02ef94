"""What follows when a stage changes a delivery's status, in the unit that changed it.

The notification's status is brought in step in the same transaction (``Unit.settle``), and
the change is kept for the status webhooks that want it (``Unit.changed``): no
event has to travel through the outbox, the bus and a status consumer first, which was a third
of the messages a notification made. With ``HERALD_STATUS_EVENTS=on`` the change is also
published on the status topic, for consumers outside Herald (Herald's own status consumer only
drains what earlier builds published there).
"""

from __future__ import annotations

from typing import Protocol

from herald.bus.topics import Topics
from herald.domain.messages import DeliveryStatusChanged
from herald.domain.models import DeliveryStatus
from herald.pipeline.envelope import envelope
from herald.pipeline.unit import DeliveryChange, Unit


class Changed(Protocol):
    """The delivery that changed (a job, or the delivery a receipt is about)."""

    @property
    def notification_id(self) -> str: ...
    @property
    def delivery_id(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def user_key(self) -> str: ...
    @property
    def tenant_id(self) -> str: ...


class StatusChanges:
    def __init__(self, topics: Topics, *, publish: bool = False) -> None:
        self.topics = topics
        self.publish = publish

    def changed(
        self,
        unit: Unit,
        job: Changed,
        status: DeliveryStatus,
        *,
        attempts: int,
        error: str | None = None,
        trace: dict[str, str] | None = None,
    ) -> None:
        """``job``'s delivery is now ``status`` (changed in ``unit``)."""
        unit.settle([job.notification_id])
        unit.changed(
            DeliveryChange(
                job.tenant_id,
                job.notification_id,
                job.delivery_id,
                job.channel,
                status,
                attempts,
                error,
            )
        )
        if not self.publish:
            return
        event = DeliveryStatusChanged(
            notification_id=job.notification_id,
            delivery_id=job.delivery_id,
            channel=job.channel,
            user_key=job.user_key,
            status=status,
            attempts=attempts,
            error=error,
            occurred_at=unit.now,
        )
        unit.publish([envelope(self.topics.status, job.user_key, event, trace)])
