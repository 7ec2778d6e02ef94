"""The overview's figures from the store: per minute a tenant's accepted notifications and
its deliveries sent and failed, and how long sending took; other tenants' are not counted."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from herald.bus.topics import Topics
from herald.clock import utcnow
from herald.pipeline.planning import NotificationSpec
from herald.pipeline.stages.intake import Intake
from herald.pipeline.unit import Units
from herald.store import overview
from herald.store.database import Database
from herald.store.tables import deliveries
from herald.wakeup import Wakeup


async def test_a_minutes_notifications_and_their_outcomes_are_counted(db: Database) -> None:
    intake = Intake(Units(db, Wakeup()), Topics(), idempotency_ttl=60)

    def specs(tenant: str, count: int) -> list[NotificationSpec]:
        return [
            NotificationSpec.email(f"{tenant}-{i}@example.com", "Hi", "Hello", tenant_id=tenant)
            for i in range(count)
        ]

    await intake.submit_batch(specs("acme", 5), lambda o: {})
    await intake.submit_batch(specs("globex", 2), lambda o: {})
    async with db.write() as conn:
        ids = (
            (await conn.execute(sa.select(deliveries.c.id).order_by(deliveries.c.id)))
            .scalars()
            .all()
        )
        accepted_at = (await conn.execute(sa.select(deliveries.c.created_at))).scalars().first()
        sent = accepted_at + timedelta(seconds=1.5)
        await conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.id.in_(ids[:3]))
            .values(status="SENT", sent_at=sent)
        )
        await conn.execute(
            sa.update(deliveries).where(deliveries.c.id == ids[3]).values(status="DEAD_LETTERED")
        )
    now = utcnow()
    async with db.read() as conn:
        shown = await overview.minutes(conn, "acme", now=now, count=3)
        took = await overview.latency(conn, "acme", since=now - timedelta(minutes=3))
        none = await overview.latency(conn, "initech", since=now - timedelta(minutes=3))
    assert [m.start for m in shown] == [
        (now.replace(second=0, microsecond=0) - timedelta(minutes=n)).strftime("%Y-%m-%d %H:%M")
        for n in (2, 1, 0)
    ]
    assert sum(m.accepted for m in shown) == 5  # globex's two are not acme's
    assert (sum(m.sent for m in shown), sum(m.failed for m in shown)) == (3, 1)
    assert took is not None
    assert took.count == 3
    assert abs(took.p50 - 1.5) < 0.01
    assert none is None
