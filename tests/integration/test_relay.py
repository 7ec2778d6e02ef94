"""The outbox relay over the embedded bus and over Kafka, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import pytest
import sqlalchemy as sa

from herald.bus.base import Bus, Message, OutgoingMessage
from herald.bus.embedded import EmbeddedBus
from herald.bus.kafka import KafkaBus
from herald.bus.topics import Topics
from herald.clock import utcnow
from herald.errors import BusError, BusUnavailableError
from herald.pipeline.deadletter import DeadLetterOffice
from herald.pipeline.stages.relay import OutboxRelay
from herald.pipeline.unit import Units
from herald.reliability.backoff import Backoff
from herald.store import deadletters, outbox
from herald.store.database import Connection, Database
from herald.store.tables import outbox_events, outbox_shards
from herald.wakeup import Wakeup
from tests.kafka_broker import TansuBroker
from tests.services import free_port

REFUSED = "refuse.me"


class RefusingEmbeddedBus(EmbeddedBus):
    """The real embedded bus, except that it refuses one topic (fault injection)."""

    async def publish_in(self, conn: Connection, messages: Sequence[OutgoingMessage]) -> None:
        if any(m.topic.endswith(REFUSED) for m in messages):
            raise BusError(f"{REFUSED} is refused")
        await super().publish_in(conn, messages)


class RefusingKafkaBus(KafkaBus):
    """The real Kafka bus, except that it refuses one topic (fault injection)."""

    async def _publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if any(m.topic.endswith(REFUSED) for m in messages):
            raise BusError(f"{REFUSED} is refused")
        await super()._publish(messages)


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
async def bus(request: pytest.FixtureRequest, db: Database) -> AsyncIterator[Bus]:
    backend: Bus
    if request.param == "kafka":
        broker: TansuBroker = request.getfixturevalue("kafka_broker")
        backend = RefusingKafkaBus(
            {"bootstrap.servers": broker.bootstrap}, partitions=2, session_timeout_ms=3000
        )
    else:
        backend = RefusingEmbeddedBus(db, partitions=2)
    await backend.start()
    yield backend
    await backend.close()


@pytest.fixture
def topic() -> str:
    return f"relay.{uuid.uuid4().hex[:8]}"


def make_relay(db: Database, bus: Bus, **overrides: object) -> OutboxRelay:
    options: dict[str, object] = {
        "batch_size": 100,
        "max_attempts": 2,
        "event_backoff": Backoff(0.01, 0.01),
        "dead_letters": DeadLetterOffice(Units(db, Wakeup()), Topics()),
    }
    options.update(overrides)
    return OutboxRelay(db, bus, Wakeup(), **options)  # type: ignore[arg-type]


async def add(db: Database, *messages: OutgoingMessage, delay: float = 0) -> None:
    now = utcnow()
    async with db.write() as conn:
        await outbox.add(conn, messages, now=now, available_at=now + timedelta(seconds=delay))


async def read(bus: Bus, topic: str, expected: int) -> list[Message]:
    consumer = bus.consumer(f"{topic}.reader", [topic])
    received: list[Message] = []
    for _ in range(300):
        received += await consumer.poll(1000, 0.1)
        if len(received) >= expected:
            break
    await asyncio.sleep(0.2)
    received += await consumer.poll(1000, 0.1)  # anything beyond what was expected?
    await consumer.close()
    return received


async def outbox_rows(db: Database) -> list[sa.Row[tuple[object, ...]]]:
    async with db.read() as conn:
        query = sa.select(outbox_events).order_by(outbox_events.c.id)
        return list((await conn.execute(query)).all())


async def test_each_event_is_published_once_in_order(db: Database, bus: Bus, topic: str) -> None:
    await bus.ensure_topics([topic])
    await add(db, *(OutgoingMessage(topic, "user", str(i).encode()) for i in range(10)))
    relay = make_relay(db, bus)
    assert await relay.relay_once() == 10
    assert await relay.relay_once() == 0
    published = await read(bus, topic, 10)
    assert [m.value for m in published] == [str(i).encode() for i in range(10)]
    assert await outbox_rows(db) == []  # deleted as they were published


async def test_published_rows_are_kept_marked_when_asked(
    db: Database, bus: Bus, topic: str
) -> None:
    """HERALD_OUTBOX_RETENTION_SECONDS > 0: marked PUBLISHED, for maintenance to delete."""
    await bus.ensure_topics([topic])
    await add(db, *(OutgoingMessage(topic, "user", str(i).encode()) for i in range(3)))
    relay = make_relay(db, bus, keep_published=True)
    assert await relay.relay_once() == 3
    assert await relay.relay_once() == 0
    rows = await outbox_rows(db)
    assert [(r.status, r.published_at is not None) for r in rows] == [("PUBLISHED", True)] * 3


async def test_delayed_events_wait_until_due(db: Database, bus: Bus, topic: str) -> None:
    await bus.ensure_topics([topic])
    await add(db, OutgoingMessage(topic, "k", b"later"), delay=1.0)
    relay = make_relay(db, bus)
    assert await relay.relay_once() == 0
    await asyncio.sleep(1.1)
    assert await relay.relay_once() == 1
    assert [m.value for m in await read(bus, topic, 1)] == [b"later"]


async def test_a_refused_event_does_not_hold_back_the_others(
    db: Database, bus: Bus, topic: str
) -> None:
    refused_topic = f"{topic}.{REFUSED}"
    await bus.ensure_topics([topic, refused_topic])
    await add(
        db,
        OutgoingMessage(topic, "k", b"before"),
        OutgoingMessage(refused_topic, "k", b"poison"),
        OutgoingMessage(topic, "k", b"after"),
    )
    relay = make_relay(db, bus)
    await relay.relay_once()
    assert [m.value for m in await read(bus, topic, 2)] == [b"before", b"after"]
    refused = [r for r in await outbox_rows(db) if r.topic == refused_topic]
    assert [(r.status, r.attempts) for r in refused] == [("FAILED", 1)]
    assert REFUSED in (refused[0].last_error or "")

    await asyncio.sleep(0.05)  # the event's backoff
    await relay.relay_once()
    refused = [r for r in await outbox_rows(db) if r.topic == refused_topic]
    assert [(r.status, r.attempts) for r in refused] == [("DEAD_LETTERED", 2)]
    async with db.read() as conn:
        [letter] = await deadletters.list_page(conn, deadletters.Filters(), limit=10)
    assert (letter.kind, letter.reason, letter.topic, letter.payload) == (
        "event",
        "refused",
        refused_topic,
        b"poison",
    )

    await asyncio.sleep(0.05)
    await relay.relay_once()  # publishes the deadletter event, and nothing else
    refused = [r for r in await outbox_rows(db) if r.topic == refused_topic]
    assert [(r.status, r.attempts) for r in refused] == [("DEAD_LETTERED", 2)]
    assert [m.value for m in await read(bus, topic, 2)] == [b"before", b"after"]


@pytest.mark.kafka
async def test_an_unreachable_broker_counts_against_no_event(db: Database, topic: str) -> None:
    dead_broker = KafkaBus({"bootstrap.servers": f"127.0.0.1:{free_port()}"}, publish_timeout=1.0)
    await dead_broker.start()
    await add(db, OutgoingMessage(topic, "k", b"waits"))
    relay = make_relay(db, dead_broker)
    with pytest.raises(BusUnavailableError):
        await relay.relay_once()
    [row] = await outbox_rows(db)
    assert (row.status, row.attempts) == ("PENDING", 0)
    async with db.read() as conn:
        leased = await conn.scalar(
            sa.select(sa.func.count()).where(outbox_shards.c.owner.is_not(None))
        )
    assert leased == 0  # the shards went back for the next try
    await dead_broker.close()


@pytest.mark.kafka
async def test_concurrent_relays_share_the_work_and_keep_each_key_in_order(
    db: Database, kafka_broker: TansuBroker, topic: str
) -> None:
    buses = [
        KafkaBus({"bootstrap.servers": kafka_broker.bootstrap}, partitions=4) for _ in range(2)
    ]
    for bus in buses:
        await bus.start()
    await buses[0].ensure_topics([topic])
    users, per_user = 40, 25
    await add(
        db,
        *(
            OutgoingMessage(topic, f"user-{u}", str(i).encode())
            for i in range(per_user)
            for u in range(users)
        ),
    )
    relays = [make_relay(db, bus, batch_size=50, shards_per_claim=4) for bus in buses]
    handled = [0, 0]

    async def drain(index: int) -> None:
        while True:
            count = await relays[index].relay_once()
            handled[index] += count
            if count == 0 and not any(r.status != "PUBLISHED" for r in await outbox_rows(db)):
                return

    await asyncio.gather(drain(0), drain(1))
    received = await read(buses[0], topic, users * per_user)
    for bus in buses:
        await bus.close()

    by_user: dict[str, list[int]] = defaultdict(list)
    for message in received:
        by_user[message.key or ""].append(int(message.value))
    assert by_user == {f"user-{u}": list(range(per_user)) for u in range(users)}
    assert all(handled), f"one relay did all the work: {handled}"


class CountingEmbeddedBus(EmbeddedBus):
    """The real embedded bus, counting how many messages each publish carried."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, partitions=2)
        self.batches: list[int] = []

    async def publish_in(self, conn: Connection, messages: Sequence[OutgoingMessage]) -> None:
        self.batches.append(len(messages))
        await super().publish_in(conn, messages)


def test_the_linger_grows_to_four_times_itself_unless_told_otherwise(db: Database) -> None:
    bus = CountingEmbeddedBus(db)
    assert make_relay(db, bus, linger=0.001).linger_max == pytest.approx(0.004)
    assert make_relay(db, bus, linger=0.01, linger_max=0.1).linger_max == 0.1
    assert make_relay(db, bus, linger=0.01, linger_max=0.001).linger_max == 0.01  # never less


@pytest.mark.parametrize("first", [1, 80])
async def test_after_a_large_batch_the_relay_lingers_longer(
    db: Database, topic: str, first: int
) -> None:
    """The linger grows with the batch just published: after a lone event the relay waits its
    0.1 s, so three commits 0.2 s apart go out apart; after 80 events (ten steps of eight) it
    waits up to its 2 s maximum (1 s here), so the same three commits go out together."""
    bus = CountingEmbeddedBus(db)
    await bus.start()
    await bus.ensure_topics([topic])
    relay = make_relay(db, bus, linger=0.1, linger_max=2.0, poll_interval=5.0)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    await asyncio.sleep(0.1)  # its first look found nothing; now it waits to be woken
    await add(db, *(OutgoingMessage(topic, "user", b"first") for _ in range(first)))
    relay.wakeup.notify()
    await read(bus, topic, first)
    for i in range(3):
        await add(db, OutgoingMessage(topic, "user", str(i).encode()))
        relay.wakeup.notify()
        await asyncio.sleep(0.2)
    received = await read(bus, topic, first + 3)
    stop.set()
    await running
    await bus.close()
    assert [m.value for m in received] == [b"first"] * first + [b"0", b"1", b"2"]
    assert bus.batches[0] == first
    if first == 1:
        assert len(bus.batches) > 2, bus.batches
    else:
        assert bus.batches == [first, 3]


@pytest.mark.parametrize("linger", [0.0, 0.6])
async def test_after_a_wake_up_the_relay_lingers_for_more(
    db: Database, topic: str, linger: float
) -> None:
    """Commits arriving within the linger go out in one publish (one transaction, one produce
    request); without a linger the first wake-up publishes the first commit alone."""
    bus = CountingEmbeddedBus(db)
    await bus.start()
    await bus.ensure_topics([topic])
    relay = make_relay(db, bus, linger=linger, poll_interval=5.0)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    await asyncio.sleep(0.1)  # its first look found nothing; now it waits to be woken
    for i in range(3):
        await add(db, OutgoingMessage(topic, "user", str(i).encode()))
        relay.wakeup.notify()
        await asyncio.sleep(0.05)
    received = await read(bus, topic, 3)
    stop.set()
    await running
    await bus.close()
    assert [m.value for m in received] == [b"0", b"1", b"2"]
    if linger:
        assert bus.batches == [3]
    else:
        assert len(bus.batches) > 1, bus.batches
