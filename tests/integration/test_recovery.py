"""The recovery sweep puts back on the bus what the bus lost."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from herald.bus.topics import Topics
from herald.clock import utcnow
from herald.domain.messages import DeliveryJob, StatusWebhookJob, decode
from herald.pipeline.operations.recovery import Recovery
from herald.pipeline.planning import NotificationSpec
from herald.pipeline.stages.intake import Intake
from herald.pipeline.unit import Units
from herald.store import webhook_events
from herald.store.database import Database
from herald.store.tables import deliveries, notifications, outbox_events
from herald.store.webhook_events import NewEvent
from herald.wakeup import Wakeup


async def accept(db: Database, recipient: str) -> str:
    intake = Intake(Units(db, Wakeup()), Topics(), idempotency_ttl=60)
    accepted = await intake.submit(
        NotificationSpec.email(recipient, "Hi", "Hello"), lambda r: {"id": r.id}
    )
    return str(accepted.body["id"])


async def set_delivery(db: Database, notification_id: str, **values: object) -> None:
    async with db.write() as conn:
        await conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.notification_id == notification_id)
            .values(**values)
        )


async def test_lost_jobs_are_queued_again_and_lost_statuses_settled(db: Database) -> None:
    long_ago = utcnow() - timedelta(minutes=10)
    queued = await accept(db, "queued@example.com")
    await set_delivery(db, queued, updated_at=long_ago)
    retrying = await accept(db, "retrying@example.com")
    await set_delivery(db, retrying, status="RETRY_PENDING", attempts=2, next_attempt_at=long_ago)
    orphaned = await accept(db, "orphaned@example.com")  # its worker died mid-send
    await set_delivery(db, orphaned, status="PROCESSING", attempts=1, lease_until=long_ago)
    fresh = await accept(db, "fresh@example.com")  # just accepted: its job is on its way
    settled = await accept(db, "settled@example.com")  # sent, but its status event was lost
    await set_delivery(db, settled, status="SENT", attempts=1)
    async with db.write() as conn:  # the bus lost everything that was published
        await conn.execute(sa.delete(outbox_events))

    counts = await Recovery(Units(db, Wakeup()), Topics(), stuck_after=60).run_once()

    assert counts == {"requeued": 3, "settled": 1, "status_events": 0}
    async with db.read() as conn:
        events = (await conn.execute(sa.select(outbox_events))).all()
        statuses = dict(
            (await conn.execute(sa.select(notifications.c.id, notifications.c.status))).all()
        )
    jobs = {
        decode(DeliveryJob, e.payload).notification_id: decode(DeliveryJob, e.payload)
        for e in events
    }
    assert set(jobs) == {queued, retrying, orphaned}
    assert jobs[retrying].attempt == 2  # only the job for this retry may claim it
    assert jobs[queued].content.body == "Hello"
    assert {e.topic for e in events} == {"herald.deliveries.email"}
    assert statuses[settled] == "SENT"
    assert statuses[fresh] == "PENDING"

    again = await Recovery(Units(db, Wakeup()), Topics(), stuck_after=60).run_once()
    assert again == {"requeued": 0, "settled": 0, "status_events": 0}  # not at every sweep


async def test_status_events_whose_jobs_were_lost_are_queued_again(db: Database) -> None:
    long_ago = utcnow() - timedelta(minutes=10)

    def event(event_id: str, after: str | None = None, **values: object) -> dict[str, object]:
        row = NewEvent(event_id, "default", "s1", f"n-{event_id}", "delivery.sent", "{}", after)
        return {**row.row(long_ago), **values}

    rows = [
        event("e1"),  # queued: its job lost
        event("e2", status="RETRY_PENDING", attempts=2, next_attempt_at=long_ago),
        event("e3", status="PROCESSING", attempts=1, lease_until=long_ago),  # its sender died
        event("e4", after="e5"),  # waiting after one that was sent: never released
        event("e5", status="SENT", attempts=1),
        event("e6", after="e1"),  # waiting, rightly: e1 is not done
        event("e7", updated_at=utcnow()),  # just made: its job is on its way
        event("e8", status="RETRY_PENDING", attempts=1, next_attempt_at=utcnow()),  # due soon
    ]
    async with db.write() as conn:
        await conn.execute(sa.insert(webhook_events.webhook_events), rows)

    counts = await Recovery(Units(db, Wakeup()), Topics(), stuck_after=60).run_once()

    async with db.read() as conn:
        queued = (await conn.execute(sa.select(outbox_events))).all()
        released = await webhook_events.get_many(conn, ["e4"])
    jobs = {j.event_id: j.attempt for j in (decode(StatusWebhookJob, e.payload) for e in queued)}
    assert counts["status_events"] == 4
    assert jobs == {"e1": 0, "e2": 2, "e3": 0, "e4": 0}
    assert {e.topic for e in queued} == {"herald.status_webhooks"}
    assert [e.status for e in released] == ["PENDING"]
    again = await Recovery(Units(db, Wakeup()), Topics(), stuck_after=60).run_once()
    assert again["status_events"] == 0  # not re-queued at every sweep
