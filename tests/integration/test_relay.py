"""The outbox relay over a real embedded bus, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.bus.base import Message, OutgoingMessage
from herald.bus.embedded import EmbeddedBus
from herald.clock import utcnow
from herald.errors import BusError
from herald.pipeline.relay import OutboxRelay
from herald.reliability.backoff import Backoff
from herald.store import outbox
from herald.store.database import Database
from herald.store.tables import outbox_events
from herald.wakeup import Wakeup


class RefusingBus(EmbeddedBus):
    """The real embedded bus, except that it refuses one topic (fault injection)."""

    refused_topic = "refuse.me"

    async def publish_in(self, conn: AsyncConnection, messages: Sequence[OutgoingMessage]) -> None:
        if any(m.topic == self.refused_topic for m in messages):
            raise BusError(f"{self.refused_topic} is refused")
        await super().publish_in(conn, messages)


async def add(db: Database, *messages: OutgoingMessage, delay: float = 0) -> None:
    now = utcnow()
    async with db.write() as conn:
        await outbox.add(conn, messages, now=now, available_at=now + timedelta(seconds=delay))


async def read_all(bus: EmbeddedBus, topic: str) -> list[Message]:
    consumer = bus.consumer(f"reader-{topic}", [topic])
    messages = await consumer.poll(1000, 0.2)
    await consumer.close()
    return messages


async def outbox_rows(db: Database) -> list[sa.Row[tuple[object, ...]]]:
    async with db.read() as conn:
        return list(
            (await conn.execute(sa.select(outbox_events).order_by(outbox_events.c.id))).all()
        )


@pytest.fixture
def bus(db: Database) -> EmbeddedBus:
    return RefusingBus(db, partitions=2)


@pytest.fixture
async def relay(db: Database, bus: EmbeddedBus) -> OutboxRelay:
    await bus.ensure_topics(["t", RefusingBus.refused_topic])
    return OutboxRelay(
        db, bus, Wakeup(), batch_size=100, max_attempts=2, event_backoff=Backoff(0.01, 0.01)
    )


async def test_each_event_is_published_once_in_order(
    db: Database, bus: EmbeddedBus, relay: OutboxRelay
) -> None:
    await add(db, *(OutgoingMessage("t", "user", str(i).encode()) for i in range(10)))
    assert await relay.relay_once() == 10
    assert await relay.relay_once() == 0
    assert [m.value for m in await read_all(bus, "t")] == [str(i).encode() for i in range(10)]
    assert {r.status for r in await outbox_rows(db)} == {"PUBLISHED"}


async def test_delayed_events_wait_until_due(
    db: Database, bus: EmbeddedBus, relay: OutboxRelay
) -> None:
    await add(db, OutgoingMessage("t", "k", b"later"), delay=0.3)
    assert await relay.relay_once() == 0
    await asyncio.sleep(0.4)
    assert await relay.relay_once() == 1
    assert [m.value for m in await read_all(bus, "t")] == [b"later"]


async def test_a_refused_event_does_not_hold_back_the_others(
    db: Database, bus: EmbeddedBus, relay: OutboxRelay
) -> None:
    await add(
        db,
        OutgoingMessage("t", "k", b"before"),
        OutgoingMessage(RefusingBus.refused_topic, "k", b"poison"),
        OutgoingMessage("t", "k", b"after"),
    )
    await relay.relay_once()
    assert [m.value for m in await read_all(bus, "t")] == [b"before", b"after"]
    refused = [r for r in await outbox_rows(db) if r.topic == RefusingBus.refused_topic]
    assert [(r.status, r.attempts) for r in refused] == [("FAILED", 1)]
    assert "refused" in (refused[0].last_error or "")

    await asyncio.sleep(0.05)  # the event's backoff
    await relay.relay_once()
    refused = [r for r in await outbox_rows(db) if r.topic == RefusingBus.refused_topic]
    assert [(r.status, r.attempts) for r in refused] == [("DEAD_LETTERED", 2)]

    await asyncio.sleep(0.05)
    assert await relay.relay_once() == 0  # dead-lettered events are left alone
