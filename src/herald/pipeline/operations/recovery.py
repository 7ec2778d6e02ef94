"""Put back what the bus lost: the database, not the bus, is the record of what is owed.

A bus loses messages only in accidents (a broker replaced with its storage, retention that
outran a long outage), but then a delivery waits forever. Every sweep, unless the outbox
itself is behind (then the bus is down or slow, nothing is lost, and more would only add to
the backlog):
- re-queues deliveries that should have moved long ago: PENDING since before the threshold,
  a retry overdue by more than it, or PROCESSING with a lease lapsed that long (a worker died
  and nobody got its job again). A duplicate job is harmless: the claim recognises it;
- settles notifications whose deliveries have all ended but whose status event never came;
- re-queues status events for webhook subscriptions stuck the same way (or waiting after one
  that has ended: store/webhook_events.stuck).
"""

from __future__ import annotations

from datetime import timedelta

from herald.bus.topics import Topics
from herald.clock import utcnow
from herald.domain.messages import Content, DeliveryJob
from herald.domain.models import DeliveryStatus
from herald.observability.logging import get_logger
from herald.pipeline.envelope import envelope
from herald.pipeline.status_webhooks import status_webhook_job
from herald.pipeline.unit import Units
from herald.store import deliveries, notifications, outbox, webhook_events

log = get_logger(__name__)

BATCH = 500


class Recovery:
    def __init__(self, units: Units, topics: Topics, *, stuck_after: float) -> None:
        self.units = units
        self.topics = topics
        self.stuck_after = timedelta(seconds=stuck_after)

    async def run_once(self) -> dict[str, int]:
        now = utcnow()
        before = now - self.stuck_after
        async with self.units.begin() as unit:
            conn = unit.conn
            if await outbox.has_backlog(conn, older_than=before):
                log.info("recovery.deferred", reason="the outbox is behind")
                return {"requeued": 0, "settled": 0, "status_events": 0}
            lost = await deliveries.stuck(conn, before=before, limit=BATCH)
            jobs = [
                envelope(
                    self.topics.deliveries(d.channel),
                    d.user_key,
                    DeliveryJob(
                        delivery_id=d.delivery_id,
                        tenant_id=d.tenant_id,
                        notification_id=d.notification_id,
                        channel=d.channel,
                        recipient=d.recipient,
                        user_key=d.user_key,
                        content=Content.model_validate(d.content)
                        if d.content is not None
                        else Content(subject=d.subject, body=d.body),
                        accepted_at=d.accepted_at,
                        user_id=d.user_id,
                        category=d.category,
                        priority=d.priority,
                        # A retry is claimed only by the job of its own attempt.
                        attempt=d.attempts if d.status == DeliveryStatus.RETRY_PENDING else 0,
                    ),
                )
                for d in lost
            ]
            unit.publish(jobs)
            await deliveries.touch(conn, [d.delivery_id for d in lost], now)
            events = await webhook_events.stuck(conn, before=before, now=now, limit=BATCH)
            unit.publish(
                status_webhook_job(self.topics, e.id, e.tenant_id, e.notification_id, e.attempt)
                for e in events
            )

            # Deliveries ended but their notification not (a build before the status was
            # settled with them): settled at commit, as every writer does (notifications.settle).
            unit.settle(await notifications.pending_but_finished(conn, limit=BATCH))
        settled = len(unit.settled)
        if lost:
            log.warning(
                "recovery.requeued",
                deliveries=len(lost),
                pending=sum(d.status == DeliveryStatus.PENDING for d in lost),
                retrying=sum(d.status == DeliveryStatus.RETRY_PENDING for d in lost),
                processing=sum(d.status == DeliveryStatus.PROCESSING for d in lost),
            )
        if settled:
            log.warning("recovery.settled", notifications=settled)
        if events:
            log.warning("recovery.requeued_status_events", events=len(events))
        return {"requeued": len(lost), "settled": settled, "status_events": len(events)}
