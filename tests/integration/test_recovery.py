"""The recovery sweep puts back on the bus what the bus lost."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from herald.bus.topics import Topics
from herald.clock import utcnow
from herald.domain.messages import DeliveryJob, decode
from herald.pipeline.operations.recovery import Recovery
from herald.pipeline.planning import NotificationSpec
from herald.pipeline.stages.intake import Intake
from herald.pipeline.unit import Units
from herald.store.database import Database
from herald.store.tables import deliveries, notifications, outbox_events
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

    assert counts == {"requeued": 3, "settled": 1}
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
    assert again == {"requeued": 0, "settled": 0}  # not re-queued at every sweep
