"""Cancelling a scheduled notification changes it only while every delivery is still PENDING:
one that a worker has claimed is under way, and a cancel then changes nothing."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import sqlalchemy as sa

from herald.bus.topics import Topics
from herald.clock import utcnow
from herald.pipeline.planning import NotificationSpec
from herald.pipeline.stages.intake import Intake
from herald.pipeline.unit import Units
from herald.store import journal, notifications
from herald.store.database import Database
from herald.store.notifications import Cancelled
from herald.store.tables import deliveries
from herald.wakeup import Wakeup


async def _scheduled(db: Database) -> str:
    intake = Intake(Units(db, Wakeup()), Topics(), idempotency_ttl=60)
    spec = dataclasses.replace(
        NotificationSpec.email("later@example.com", "Hi", "Hello"),
        send_at=utcnow() + timedelta(hours=1),
    )
    accepted = await intake.submit(spec, lambda record: {"id": record.id})
    notification_id: str = accepted.body["id"]
    return notification_id


async def test_a_scheduled_notification_is_cancelled_once(db: Database) -> None:
    notification_id = await _scheduled(db)
    async with db.write() as conn:
        first = await notifications.cancel(conn, "default", notification_id, now=utcnow())
        again = await notifications.cancel(conn, "default", notification_id, now=utcnow())
        other = await notifications.cancel(conn, "acme", notification_id, now=utcnow())
        record = await notifications.get(conn, "default", notification_id)
        steps = await journal.steps_of(conn, notification_id)
    assert (first, again, other) == (
        Cancelled.CANCELLED,
        Cancelled.NOT_SCHEDULED,
        Cancelled.NOT_FOUND,  # another tenant's
    )
    assert record is not None
    assert record.status == "CANCELLED"
    assert [(d.status, d.skip_reason) for d in record.deliveries] == [("SKIPPED", "cancelled")]
    assert [s.step for s in steps].count(journal.CANCELLED) == 1


async def test_a_notification_whose_delivery_was_claimed_is_not_cancelled(db: Database) -> None:
    notification_id = await _scheduled(db)
    async with db.write() as conn:  # it fell due and a worker claimed its delivery
        await conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.notification_id == notification_id)
            .values(status="PROCESSING")
        )
    async with db.write() as conn:
        done = await notifications.cancel(conn, "default", notification_id, now=utcnow())
        record = await notifications.get(conn, "default", notification_id)
        steps = await journal.steps_of(conn, notification_id)
    assert done == Cancelled.UNDER_WAY
    assert record is not None
    assert record.status == "SCHEDULED"  # unchanged: the worker settles it
    assert [d.status for d in record.deliveries] == ["PROCESSING"]
    assert journal.CANCELLED not in [s.step for s in steps]
