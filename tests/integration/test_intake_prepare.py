"""Intake builds a request's notifications (records, jobs, rows, response) before it waits for
the writer: the one writer's turn (on SQLite, the database's write lock) is spent only on what
needs the database, and while one transaction writes, the next requests are built."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from herald.bus.topics import Topics
from herald.clock import utcnow
from herald.pipeline.planning import NotificationSpec
from herald.pipeline.stages.intake import Intake
from herald.pipeline.unit import Unit, Units
from herald.store.database import Database
from herald.store.tables import notifications
from herald.wakeup import Wakeup


async def test_a_batch_is_built_while_the_writer_is_busy(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    intake = Intake(Units(db, Wakeup()), Topics(), idempotency_ttl=60)
    writing, release = asyncio.Event(), asyncio.Event()

    async def busy(unit: Unit) -> None:
        writing.set()
        await release.wait()

    holding = asyncio.create_task(intake.group.write(busy))
    await writing.wait()
    queued, write = asyncio.Event(), intake.group.write

    async def queue(store: Any) -> Any:
        queued.set()
        return await write(store)

    monkeypatch.setattr(intake.group, "write", queue)
    specs = [NotificationSpec.email(f"u{i}@example.com", "Hi", "Hello") for i in range(20)]
    submitting = asyncio.create_task(intake.submit_batch(specs, lambda o: {"items": len(o)}))
    await queued.wait()  # behind the busy write
    released = utcnow()
    release.set()
    await holding
    accepted = await submitting

    assert accepted.body == {"items": 20}
    async with db.read() as conn:
        created = (await conn.execute(sa.select(notifications.c.created_at))).scalars().all()
    assert len(created) == 20
    assert max(created) < released  # built (and timed) before the writer was free
