"""What every bus backend promises (bus/base.py), checked against each real backend."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest

from herald.bus.base import Bus, Consumer, Message, OutgoingMessage
from herald.bus.embedded import EmbeddedBus
from herald.bus.kafka import KafkaBus
from herald.errors import BusError
from herald.store.database import Database


@pytest.fixture(
    params=[
        "embedded-sqlite",
        pytest.param("embedded-postgres", marks=pytest.mark.postgres),
        pytest.param("kafka", marks=pytest.mark.kafka),
    ]
)
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    """Each backend, empty; the contract tests below must pass on every one."""
    db = None
    backend: Bus
    if request.param == "kafka":
        broker = request.getfixturevalue("kafka_broker")
        backend = KafkaBus(
            {"bootstrap.servers": broker.bootstrap}, partitions=3, session_timeout_ms=3000
        )
    else:
        fixture = "fresh_sqlite_url" if request.param == "embedded-sqlite" else "fresh_pg_url"
        db = Database(request.getfixturevalue(fixture), sqlite_synchronous="NORMAL")
        backend = EmbeddedBus(db, partitions=3, poll_interval=0.05)
    await backend.start()
    yield backend
    await backend.close()
    if db is not None:
        await db.close()


@pytest.fixture
def topic() -> str:
    return f"test.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def group(topic: str) -> str:
    """Unique per test: the Kafka broker is shared by the whole run."""
    return f"{topic}.group"


async def joined(consumer: Consumer, timeout: float = 20.0) -> None:
    """Poll until the consumer has partitions (a Kafka group join takes a moment)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not consumer.assignment():
        assert asyncio.get_running_loop().time() < deadline, "never got partitions"
        assert await consumer.poll(1, 0.1) == []


async def drain(consumer: Consumer, expected: int, timeout: float = 10.0) -> list[Message]:
    received: list[Message] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(received) < expected:
        assert asyncio.get_running_loop().time() < deadline, f"got {len(received)}/{expected}"
        received += await consumer.poll(100, 0.2)
    return received


def _messages(topic: str, users: int, per_user: int) -> list[OutgoingMessage]:
    return [
        OutgoingMessage(topic, f"user-{u}", f"{u}:{i}".encode(), {"seq": str(i)})
        for i in range(per_user)
        for u in range(users)
    ]


async def test_each_key_is_read_in_publish_order(bus: Bus, topic: str, group: str) -> None:
    await bus.ensure_topics([topic])
    await bus.publish(_messages(topic, users=7, per_user=20))
    consumer = bus.consumer(group, [topic])
    received = await drain(consumer, 140)
    await consumer.close()

    by_key: dict[str, list[int]] = defaultdict(list)
    for m in received:
        by_key[m.key or ""].append(int(m.headers["seq"]))
    assert by_key == {f"user-{u}": list(range(20)) for u in range(7)}
    partitions = {m.key: m.partition for m in received}
    assert all(m.partition == partitions[m.key] for m in received)  # a key stays put


async def test_a_group_resumes_after_its_last_commit(bus: Bus, topic: str, group: str) -> None:
    await bus.ensure_topics([topic])
    await bus.publish(_messages(topic, users=1, per_user=10))
    first = bus.consumer(group, [topic])
    received = await drain(first, 10)
    sixth = received[5]
    await first.commit({sixth.tp: sixth.offset + 1})  # done with 0..5 only
    await first.close()

    second = bus.consumer(group, [topic])
    again = await drain(second, 4)
    await second.close()
    assert [int(m.headers["seq"]) for m in again] == [6, 7, 8, 9]


async def test_lag_counts_what_a_group_has_not_committed(bus: Bus, topic: str, group: str) -> None:
    await bus.ensure_topics([topic])
    assert sum((await bus.lag(group, [topic])).values()) == 0
    for message in _messages(topic, users=1, per_user=10):
        await bus.publish([message])
    lag = await bus.lag(group, [topic])
    assert len(lag) == 3  # every partition of the topic, read or not
    assert sum(lag.values()) == 10
    consumer = bus.consumer(group, [topic])
    received = await drain(consumer, 10)
    await consumer.commit({received[3].tp: received[3].offset + 1})
    await consumer.close()
    lag = await bus.lag(group, [topic])
    assert lag[received[3].tp] == 6
    assert sum(lag.values()) == 6


async def test_every_group_sees_every_message(bus: Bus, topic: str, group: str) -> None:
    await bus.ensure_topics([topic])
    await bus.publish(_messages(topic, users=3, per_user=5))
    for name in ("archive", "indexer"):
        consumer = bus.consumer(f"{group}.{name}", [topic])
        assert len(await drain(consumer, 15)) == 15
        await consumer.close()


async def test_paused_partitions_are_not_read(bus: Bus, topic: str, group: str) -> None:
    await bus.ensure_topics([topic])
    consumer = bus.consumer(group, [topic])
    await joined(consumer)
    consumer.pause(consumer.assignment())
    await bus.publish(_messages(topic, users=5, per_user=2))
    assert await consumer.poll(100, 0.3) == []
    consumer.resume(consumer.assignment())
    assert len(await drain(consumer, 10)) == 10
    await consumer.close()


async def test_a_poll_returns_what_is_there_without_waiting_for_more(
    bus: Bus, topic: str, group: str
) -> None:
    """Fewer messages than asked for: the poll hands them over, not after its whole timeout
    (librdkafka's consume() waits for all it was asked for)."""
    await bus.ensure_topics([topic])
    consumer = bus.consumer(group, [topic])
    await joined(consumer)
    await bus.publish(_messages(topic, users=3, per_user=1))
    loop = asyncio.get_running_loop()
    received: list[Message] = []
    started = loop.time()
    while len(received) < 3:
        received += await consumer.poll(1000, 30)
    assert loop.time() - started < 15, "the poll waited for its timeout"
    await consumer.close()


# -- the embedded bus only ---------------------------------------------------------------


async def test_a_waiting_poll_wakes_up_when_a_message_arrives(db: Database, topic: str) -> None:
    # With a 60 s poll interval only the in-process wake-up can end this poll in time
    # for the test's timeout.
    bus = EmbeddedBus(db, partitions=1, poll_interval=60)
    await bus.ensure_topics([topic])
    consumer = bus.consumer("g", [topic])
    await consumer.poll(1, 0)
    waiting = asyncio.create_task(consumer.poll(10, 60))
    await asyncio.sleep(0.1)
    await bus.publish([OutgoingMessage(topic, "k", b"v")])
    messages = await asyncio.wait_for(waiting, 30)
    assert [m.value for m in messages] == [b"v"]
    await consumer.close()


async def test_publish_in_is_part_of_the_callers_transaction(db: Database, topic: str) -> None:
    bus = EmbeddedBus(db, partitions=2)
    await bus.ensure_topics([topic])

    async def append_then_fail() -> None:
        async with db.write() as conn:
            await bus.publish_in(conn, [OutgoingMessage(topic, "k", b"lost")])
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError, match="rolled back"):
        await append_then_fail()
    async with db.write() as conn:
        await bus.publish_in(conn, [OutgoingMessage(topic, "k", b"kept")])
    consumer = bus.consumer("g", [topic])
    received = await drain(consumer, 1)
    assert [(m.value, m.offset) for m in received] == [(b"kept", 0)]  # no gap left behind
    await consumer.close()


async def test_one_process_consumes_a_group_and_another_takes_over(
    db: Database, topic: str
) -> None:
    bus = EmbeddedBus(db, partitions=2, group_lease_seconds=2.0)
    await bus.ensure_topics([topic])
    await bus.publish(_messages(topic, users=4, per_user=1))
    active, standby = bus.consumer("g", [topic]), bus.consumer("g", [topic])
    assert len(await drain(active, 4)) == 4
    assert await standby.poll(10, 0.2) == []
    assert standby.assignment() == frozenset()

    # The active consumer stops renewing (as if frozen or killed); its lease lapses.
    await asyncio.sleep(2.2)
    taken_over = await drain(standby, 4)  # nothing was committed: all read again
    assert len(taken_over) == 4
    with pytest.raises(BusError, match="no longer owns"):  # fenced: cannot move offsets
        await active.commit({taken_over[0].tp: taken_over[0].offset + 1})
    await standby.close()


async def test_retention_drops_old_messages(db: Database, topic: str) -> None:
    bus = EmbeddedBus(db, partitions=1)
    await bus.ensure_topics([topic])
    await bus.publish(_messages(topic, users=1, per_user=3))
    from herald.clock import utcnow

    assert await bus.delete_older_than(utcnow()) == 3
    ends = await bus.end_offsets()
    assert [v for tp, v in ends.items() if tp.topic == topic] == [3]  # offsets never reused
