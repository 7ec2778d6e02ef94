"""A notification's status is settled in the transaction that changed its deliveries; two such
transactions at once (its email and its SMS, recorded by two workers) take turns, so neither
leaves a status the other made stale."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
import sqlalchemy as sa

from herald.bus.topics import Topics
from herald.clock import utcnow
from herald.domain.models import DeliveryStatus
from herald.pipeline.planning import NotificationSpec, Planner
from herald.pipeline.stages.intake import Intake
from herald.pipeline.unit import Units
from herald.store import receipts
from herald.store.database import Database
from herald.store.notifications import settle
from herald.store.tables import deliveries, notifications
from herald.store.users import Profile
from herald.wakeup import Wakeup


async def a_notification_being_sent(db: Database, channels: list[str]) -> list[str]:
    """Notification "n" with a delivery per channel, each PROCESSING; the deliveries' ids."""
    now = utcnow()
    async with db.write() as conn:
        await conn.execute(
            sa.insert(notifications).values(
                id="n", body="B", status="PENDING", created_at=now, updated_at=now
            )
        )
        await conn.execute(
            sa.insert(deliveries),
            [
                {
                    "id": f"d-{channel}",
                    "notification_id": "n",
                    "channel": channel,
                    "recipient": "r",
                    "status": "PROCESSING",
                    "attempts": 1,
                    "created_at": now,
                    "updated_at": now,
                }
                for channel in channels
            ],
        )
    return [f"d-{channel}" for channel in channels]


SENT = sa.update(deliveries).where(deliveries.c.id == sa.bindparam("d")).values(status="SENT")


async def status_of(db: Database) -> str:
    async with db.read() as conn:
        status: str = await conn.scalar(sa.select(notifications.c.status))
    return status


async def test_a_unit_settles_the_status_of_what_it_changed(db: Database) -> None:
    [delivery] = await a_notification_being_sent(db, ["email"])
    units = Units(db, Wakeup())
    async with units.begin() as unit:
        await unit.conn.execute(SENT, {"d": delivery})
        unit.settle(["n"])
    assert unit.settled == {"n": "SENT"}
    assert await status_of(db) == "SENT"


@pytest.mark.postgres
async def test_two_units_settling_one_notification_take_turns(fresh_pg_url: str) -> None:
    db = Database(fresh_pg_url)
    try:
        email, sms = await a_notification_being_sent(db, ["email", "sms"])
        first_settled, first_may_commit = asyncio.Event(), asyncio.Event()

        async def record(delivery: str, hold: bool) -> None:
            async with db.write() as conn:
                await conn.execute(SENT, {"d": delivery})
                await settle(conn, ["n"], utcnow())
                if hold:
                    first_settled.set()
                    await first_may_commit.wait()

        first = asyncio.create_task(record(email, hold=True))
        await first_settled.wait()
        # The second changes its delivery and settles while the first has not committed: had
        # it read the deliveries then, it would have seen the email still PROCESSING (and the
        # first saw the SMS PROCESSING): both would have left the notification PENDING.
        second = asyncio.create_task(record(sms, hold=False))
        await asyncio.sleep(0.3)
        assert not second.done(), "the second did not wait for the first's turn"
        first_may_commit.set()
        await asyncio.gather(first, second)
        assert await status_of(db) == "SENT"
    finally:
        await db.close()


async def test_a_partly_sent_notification_superseded_by_a_newer_one_is_settled(
    db: Database,
) -> None:
    planner = Planner(channels=("email", "sms"), critical_categories=frozenset(), public_url="")
    intake = Intake(Units(db, Wakeup()), Topics(), idempotency_ttl=60, planner=planner)
    spec = NotificationSpec(
        contacts=Profile(email="a@example.com", phone="+15551234567"),
        channels=("email", "sms"),
        subject="Score",
        body="1-0",
        collapse_key="score",
    )
    first = (await intake.submit(spec, lambda r: {"id": r.id, "deliveries": r.deliveries})).body
    email, _ = first["deliveries"]
    async with db.write() as conn:  # its email went out; its SMS is still to be sent
        await conn.execute(SENT, {"d": email.id})
    await intake.submit(dataclasses.replace(spec, body="2-0"), lambda r: {"id": r.id})
    # The SMS was superseded (SKIPPED): what is left of the first is its email, SENT.
    async with db.read() as conn:
        status = await conn.scalar(
            sa.select(notifications.c.status).where(notifications.c.id == first["id"])
        )
    assert status == "SENT"


async def test_a_read_never_shows_a_status_its_deliveries_do_not_explain(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bounce committed between the two statements of a read (the notification's row,
    then its deliveries') is not shown as a SENT notification with a BOUNCED delivery."""
    from herald.store import notifications as store

    [delivery] = await a_notification_being_sent(db, ["email"])
    async with db.write() as conn:
        await conn.execute(SENT, {"d": delivery})
        await settle(conn, ["n"], utcnow())
    read_deliveries = store._deliveries_of
    bounced_between = False

    async def then_a_bounce(conn: Any, ids: list[str]) -> Any:
        nonlocal bounced_between
        if not bounced_between:
            bounced_between = True
            async with db.write() as other:
                await receipts.move(other, delivery, DeliveryStatus.BOUNCED, utcnow())
                await settle(other, ["n"], utcnow())
        return await read_deliveries(conn, ids)

    monkeypatch.setattr(store, "_deliveries_of", then_a_bounce)
    async with db.read() as conn:
        found = await store.get(conn, "default", "n")

    assert bounced_between
    assert found is not None
    assert (found.status, [d.status for d in found.deliveries]) == ("FAILED", ["BOUNCED"])
