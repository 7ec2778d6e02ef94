"""Staged batches: a large batch is accepted as one row and written out later, by the expander or
by a read that asks for one of its notifications first; what its tenant sends afterwards waits
behind it; a batch that cannot be written out waits for a retry and holds back only its
tenant's later batches."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from herald.bus.topics import Topics
from herald.clock import utcnow
from herald.domain.messages import Content
from herald.ids import uuid7
from herald.pipeline.admitted import Admitted
from herald.pipeline.planning import NotificationSpec, Plan, PlannedDelivery, PlanningError
from herald.pipeline.stages.expand import Expander
from herald.pipeline.stages.intake import Intake
from herald.pipeline.unit import Units
from herald.store import deliveries as deliveries_store
from herald.store import staged_batches as staged_batches_store
from herald.store.database import Database
from herald.store.tables import deliveries, notifications, outbox_events, staged_batches
from herald.tenancy import DEFAULT_TENANT
from herald.wakeup import Wakeup
from tests.pipeline_harness import Pipeline

STAGE_FROM = 10


def _intake(db: Database) -> Intake:
    return Intake(Units(db, Wakeup()), Topics(), idempotency_ttl=60, stage_from=STAGE_FROM)


def _ids(outcomes: list[Any]) -> dict[str, Any]:
    return {"ids": [o.id for o in outcomes if isinstance(o, Admitted)]}


def _plans(specs: list[NotificationSpec]) -> list[Plan | PlanningError]:
    """Plans as intake makes them for these inline-recipient emails (no template, no user)."""
    return [
        Plan(
            spec=spec,
            deliveries=[
                PlannedDelivery(
                    "email",
                    spec.contacts.email or "" if spec.contacts else "",
                    Content(subject=spec.subject, body=spec.body or ""),
                )
            ],
            category=None,
            template=None,
        )
        for spec in specs
    ]


def _specs(count: int, tenant: str = DEFAULT_TENANT, first: int = 0) -> list[NotificationSpec]:
    return [
        NotificationSpec.email(f"u{i % 4}@example.com", f"n{i}", "Hello", tenant_id=tenant)
        for i in range(first, first + count)
    ]


async def _count(db: Database, table: sa.Table) -> int:
    async with db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar())


async def _jobs_in_order(db: Database) -> list[str]:
    """The notification ids of the outbox's jobs, in the order they will be published."""
    async with db.read() as conn:
        rows = await conn.execute(sa.select(outbox_events.c.headers).order_by(outbox_events.c.id))
        return [r.headers["herald-notification-id"] for r in rows]


async def test_a_large_batch_is_one_row_until_a_read_writes_it_out(db: Database) -> None:
    intake = _intake(db)
    before = utcnow()
    accepted = await intake.submit_batch(_specs(20), _ids)
    ids = accepted.body["ids"]
    assert len(ids) == 20
    assert await _count(db, staged_batches) == 1
    assert await _count(db, notifications) == 0  # one row so far, not twenty (and their jobs)

    assert await intake.catch_up(DEFAULT_TENANT, ids[7])  # a read of one of them
    assert await _count(db, staged_batches) == 0
    async with db.read() as conn:
        stored = {
            r.id: r.created_at
            for r in await conn.execute(sa.select(notifications.c.id, notifications.c.created_at))
        }
    assert set(stored) == set(ids)
    assert min(stored.values()) >= before  # accepted when the 202 was answered
    assert await _count(db, deliveries) == 20
    assert await _jobs_in_order(db) == ids  # every job, in the batch's order
    assert not await intake.catch_up(DEFAULT_TENANT, ids[0])  # nothing left to write out
    assert await _count(db, notifications) == 20


async def test_what_a_tenant_sends_after_a_staged_batch_is_written_out_behind_it(
    db: Database,
) -> None:
    intake = _intake(db)
    batch = (await intake.submit_batch(_specs(12), _ids)).body["ids"]
    # Small enough to be written at once, but its tenant has a batch waiting: staged behind.
    later = (await intake.submit_batch(_specs(2, first=12), _ids)).body["ids"]
    other = (await intake.submit_batch(_specs(2, tenant="acme"), _ids)).body["ids"]
    assert await _count(db, staged_batches) == 2
    assert await _jobs_in_order(db) == other  # another tenant's did not wait

    expander = Expander(intake.units, intake, Wakeup())
    while await expander.expand_once():
        pass
    assert await _count(db, staged_batches) == 0
    assert await _jobs_in_order(db) == other + batch + later


async def test_a_batch_that_fails_to_expand_holds_back_only_its_own_tenant(
    db: Database,
) -> None:
    intake = _intake(db)
    first = (await intake.submit_batch(_specs(10), _ids)).body["ids"]
    acme = (await intake.submit_batch(_specs(10, tenant="acme"), _ids)).body["ids"]
    then = (await intake.submit_batch(_specs(10, first=10), _ids)).body["ids"]
    async with db.write() as conn:
        ordered = sa.select(staged_batches.c.id, staged_batches.c.payload).order_by("id")
        broken_id, payload = (await conn.execute(ordered)).first()  # type: ignore[misc]
        await conn.execute(
            sa.update(staged_batches)
            .where(staged_batches.c.id == broken_id)
            .values(payload=b"[not json")
        )

    expander = Expander(intake.units, intake, Wakeup())
    while await expander.expand_once():
        pass
    async with db.read() as conn:
        left = (await conn.execute(ordered.add_columns(staged_batches.c.attempts))).all()
        failed = (await conn.execute(sa.select(staged_batches.c.last_error))).scalars().all()
    assert (left[0].id, left[0].attempts) == (broken_id, 1)
    assert len(left) == 2  # the broken batch, and its tenant's next one behind it
    assert any((e or "").startswith("ValueError") for e in failed), failed
    assert await _jobs_in_order(db) == acme  # the other tenant's went on
    # A read does not try the broken batch again (nor overtake it).
    await intake.catch_up(DEFAULT_TENANT)
    assert await _count(db, staged_batches) == 2
    assert await _jobs_in_order(db) == acme

    async with db.write() as conn:  # mended, and due again
        await conn.execute(
            sa.update(staged_batches)
            .where(staged_batches.c.id == broken_id)
            .values(payload=payload, next_try_at=utcnow())
        )
    while await expander.expand_once():
        pass
    assert await _count(db, staged_batches) == 0
    assert await _jobs_in_order(db) == acme + first + then


async def test_a_batch_written_out_late_is_not_taken_for_stuck_deliveries(db: Database) -> None:
    """The recovery sweep re-queues deliveries PENDING for minutes straight to their channel
    (around the router): a batch written out an hour after it was accepted is not stuck."""
    intake = _intake(db)
    await intake.submit_batch(_specs(12), _ids)
    an_hour_ago = utcnow() - timedelta(hours=1)
    async with db.write() as conn:
        await conn.execute(sa.update(staged_batches).values(created_at=an_hour_ago))
    expander = Expander(intake.units, intake, Wakeup())
    assert await expander.expand_once() == 1
    async with db.read() as conn:
        stuck = await deliveries_store.stuck(
            conn, before=utcnow() - timedelta(minutes=5), limit=100
        )
        created = (await conn.execute(sa.select(notifications.c.created_at))).scalars().all()
    assert stuck == []
    assert len(created) == 12
    assert all(abs((c - an_hour_ago).total_seconds()) < 1 for c in created)  # accepted then


async def test_a_batch_is_not_staged_twice_by_a_write_run_again(db: Database) -> None:
    """A write run again after a commit it could not confirm fails instead of staging the
    batch a second time (which would fail to expand forever, holding its tenant back)."""
    intake = _intake(db)
    prepared = await intake._prepare(_plans(_specs(12)), _ids, utcnow())
    await intake.group.write(lambda unit: intake._store(unit, prepared, None))
    with pytest.raises(IntegrityError):
        await intake.group.write(lambda unit: intake._store(unit, prepared, None))
    assert await _count(db, staged_batches) == 1


async def test_a_user_is_not_deleted_while_a_batch_of_its_tenant_waits_for_a_retry(
    pipeline: Pipeline,
) -> None:
    """What such a batch holds for the user could not be cancelled and would be sent after the
    deletion: the deletion is refused (409) until it is written out."""
    assert (await pipeline.http.put("/api/v1/users/u1", json={"email": "u1@x.io"})).is_success
    waiting = staged_batches_store.row(DEFAULT_TENANT, utcnow(), [uuid7()], b"[]")
    waiting |= {"attempts": 1, "next_try_at": utcnow() + timedelta(hours=1)}
    async with pipeline.runtime.db.write() as conn:
        await conn.execute(sa.insert(staged_batches), [waiting])
    refused = await pipeline.http.delete("/api/v1/users/u1")
    assert refused.status_code == 409, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["user_id"]
    async with pipeline.runtime.db.write() as conn:
        await conn.execute(sa.delete(staged_batches))
    assert (await pipeline.http.delete("/api/v1/users/u1")).status_code == 204
