"""The consumer runner over a real embedded bus: order per key, safe commits, bounded work."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from herald.bus.base import Message, OutgoingMessage, TopicPartition
from herald.bus.embedded import EmbeddedBus
from herald.bus.partitioner import partition_for
from herald.pipeline.runner import ConsumerRunner, one_at_a_time
from herald.reliability.backoff import Backoff
from herald.store.database import Database

TOPIC = "runner.test"


@pytest.fixture
async def bus(fresh_sqlite_url: str) -> AsyncIterator[EmbeddedBus]:
    db = Database(fresh_sqlite_url, sqlite_synchronous="NORMAL")
    backend = EmbeddedBus(db, partitions=2, poll_interval=0.05)
    await backend.ensure_topics([TOPIC])
    yield backend
    await db.close()


async def publish(bus: EmbeddedBus, users: int, per_user: int) -> None:
    await bus.publish(
        [
            OutgoingMessage(TOPIC, f"u{u}", f"{u}:{i}".encode(), {"seq": str(i)})
            for i in range(per_user)
            for u in range(users)
        ]
    )


async def committed_total(bus: EmbeddedBus, group: str = "g") -> int:
    return sum((await bus.committed(group)).values())


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.02)


async def test_in_order_per_key_and_concurrent_across_keys(bus: EmbeddedBus) -> None:
    await publish(bus, users=10, per_user=15)
    seen: dict[str, list[int]] = defaultdict(list)
    running, peak = 0, 0
    rng = random.Random(1)

    async def handler(message: Message) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(rng.uniform(0, 0.01))
        seen[message.key or ""].append(int(message.headers["seq"]))
        running -= 1

    stop = asyncio.Event()
    runner = ConsumerRunner(
        bus.consumer("g", [TOPIC]), one_at_a_time(handler), name="t", commit_interval=0.05
    )
    task = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: sum(map(len, seen.values())) == 150)
    stop.set()
    await task

    assert seen == {f"u{u}": list(range(15)) for u in range(10)}
    assert peak > 1, "keys were not processed concurrently"
    assert await committed_total(bus) == 150


async def test_commits_stop_at_the_oldest_unfinished_message(bus: EmbeddedBus) -> None:
    await bus.publish([OutgoingMessage(TOPIC, "slow", b"0")])
    await bus.publish([OutgoingMessage(TOPIC, f"fast{i}", b"x") for i in range(20)])
    release = asyncio.Event()
    done = 0

    async def handler(message: Message) -> None:
        nonlocal done
        if message.key == "slow":
            await release.wait()
        done += 1

    stop = asyncio.Event()
    runner = ConsumerRunner(
        bus.consumer("g", [TOPIC]), one_at_a_time(handler), name="t", commit_interval=0.05
    )
    task = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: done == 20)
    await asyncio.sleep(0.2)  # several commit intervals pass
    slow_partition = TopicPartition(TOPIC, partition_for("slow", 2))
    committed = await bus.committed("g")
    assert committed.get(slow_partition, 0) == 0  # held at the slow message (offset 0)

    release.set()
    await wait_until(lambda: done == 21)
    stop.set()
    await task
    assert await committed_total(bus) == 21


async def test_in_flight_work_is_bounded(bus: EmbeddedBus) -> None:
    await publish(bus, users=50, per_user=2)
    release = asyncio.Event()
    handled = 0

    async def handler(message: Message) -> None:
        nonlocal handled
        await release.wait()
        handled += 1

    stop = asyncio.Event()
    runner = ConsumerRunner(
        bus.consumer("g", [TOPIC]), one_at_a_time(handler), name="t", max_in_flight=8
    )
    task = asyncio.create_task(runner.run(stop))
    peak = 0
    for _ in range(30):
        await asyncio.sleep(0.02)
        peak = max(peak, runner.in_flight)
    assert peak == 8  # filled up to the bound and no further
    release.set()
    await wait_until(lambda: handled == 100)
    stop.set()
    await task
    assert await committed_total(bus) == 100


async def test_a_full_runner_stops_reading_and_pauses_its_partitions_only_when_full_for_long(
    bus: EmbeddedBus,
) -> None:
    """A pause makes Kafka's client drop what it fetched and fetch it again on resume (every
    max_in_flight messages, the delivery stage waited for that): a runner full for a moment
    only stops reading; one full for pause_after pauses, and polls to stay in its group."""
    await publish(bus, users=50, per_user=2)
    release = asyncio.Event()

    async def handler(message: Message) -> None:
        await release.wait()

    stop = asyncio.Event()
    consumer = bus.consumer("g", [TOPIC])
    runner = ConsumerRunner(
        consumer,
        one_at_a_time(handler),
        name="t",
        max_in_flight=8,
        pause_after=1.0,
        commit_interval=0.05,
    )
    task = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: runner.in_flight == 8)
    await asyncio.sleep(0.3)
    assert not consumer._paused, "paused as soon as it was full"
    await wait_until(lambda: bool(consumer._paused), timeout=5)
    assert runner.in_flight == 8
    release.set()
    await wait_until(lambda: not consumer._paused)
    stop.set()
    await task
    assert await committed_total(bus) == 100


async def test_a_failing_handler_is_retried_and_nothing_is_skipped(bus: EmbeddedBus) -> None:
    await publish(bus, users=1, per_user=3)
    calls: list[int] = []

    async def handler(message: Message) -> None:
        seq = int(message.headers["seq"])
        calls.append(seq)
        if seq == 1 and calls.count(1) < 3:
            raise ConnectionError("database briefly away")

    stop = asyncio.Event()
    runner = ConsumerRunner(
        bus.consumer("g", [TOPIC]),
        one_at_a_time(handler),
        name="t",
        retry_backoff=Backoff(base=0.01, cap=0.02),
        commit_interval=0.05,
    )
    task = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: 2 in calls)
    stop.set()
    await task
    assert calls == [0, 1, 1, 1, 2]  # the same key waited for message 1 to succeed
    assert await committed_total(bus) == 3


async def test_stopping_finishes_the_work_already_taken(bus: EmbeddedBus) -> None:
    await publish(bus, users=1, per_user=5)
    started = asyncio.Event()
    handled: list[int] = []

    async def slow(message: Message) -> None:
        started.set()
        await asyncio.sleep(0.05)
        handled.append(int(message.headers["seq"]))

    stop = asyncio.Event()
    runner = ConsumerRunner(bus.consumer("g", [TOPIC]), one_at_a_time(slow), name="t")
    task = asyncio.create_task(runner.run(stop))
    await started.wait()
    stop.set()
    await task
    # Everything it had fetched was finished and committed: nothing is left to repeat.
    assert handled == [0, 1, 2, 3, 4]
    assert await committed_total(bus) == 5


async def test_the_drain_deadline_hands_back_what_is_unfinished(bus: EmbeddedBus) -> None:
    await publish(bus, users=1, per_user=5)
    started = asyncio.Event()
    handled: list[int] = []

    async def slow(message: Message) -> None:
        started.set()
        await asyncio.sleep(1.0)
        handled.append(int(message.headers["seq"]))

    # The first handler ends 0.5 s inside the deadline, the second would end 0.5 s past it.
    stop = asyncio.Event()
    runner = ConsumerRunner(
        bus.consumer("g", [TOPIC]), one_at_a_time(slow), name="t", drain_timeout=1.5
    )
    task = asyncio.create_task(runner.run(stop))
    await started.wait()
    stop.set()
    await task
    assert handled == [0]  # the second was cut off by the deadline
    assert await committed_total(bus) == 1

    rest: list[int] = []

    async def record(message: Message) -> None:
        rest.append(int(message.headers["seq"]))

    stop = asyncio.Event()
    task = asyncio.create_task(
        ConsumerRunner(bus.consumer("g", [TOPIC]), one_at_a_time(record), name="t2").run(stop)
    )
    await wait_until(lambda: len(rest) == 4)
    stop.set()
    await task
    assert rest == [1, 2, 3, 4]


class Bug(BaseException):
    """Escapes the handler's retry loop, as a programming error in the runner would."""


async def test_a_crashed_key_worker_stops_the_runner_loudly(bus: EmbeddedBus) -> None:
    await publish(bus, users=1, per_user=1)

    async def handler(message: Message) -> None:
        raise Bug

    runner = ConsumerRunner(
        bus.consumer("g", [TOPIC]), one_at_a_time(handler), name="t", commit_interval=0.05
    )
    with pytest.raises(RuntimeError, match="key worker crashed"):
        await asyncio.wait_for(runner.run(asyncio.Event()), 10)
    assert await committed_total(bus) == 0


async def test_batches_hold_one_message_per_key_and_keep_each_keys_order(
    bus: EmbeddedBus,
) -> None:
    await publish(bus, users=12, per_user=10)
    batches: list[list[tuple[str, int]]] = []

    async def handle(batch: Sequence[Message]) -> None:
        batches.append([(m.key or "", int(m.headers["seq"])) for m in batch])
        await asyncio.sleep(0.01)

    stop = asyncio.Event()
    runner = ConsumerRunner(
        bus.consumer("g", [TOPIC]), handle, name="t", batch_size=5, concurrency=2, linger=0.01
    )
    task = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: sum(map(len, batches)) == 120)
    stop.set()
    await task

    assert max(map(len, batches)) == 5
    assert all(len({key for key, _ in batch}) == len(batch) for batch in batches)
    seen: dict[str, list[int]] = defaultdict(list)
    for batch in batches:
        for key, seq in batch:
            seen[key].append(seq)
    assert seen == {f"u{u}": list(range(10)) for u in range(12)}
    assert len(batches) < 120 / 2  # most batches were shared by several keys
    assert await committed_total(bus) == 120


async def test_a_message_that_fails_its_batch_fails_alone(bus: EmbeddedBus) -> None:
    await bus.publish([OutgoingMessage(TOPIC, f"k{i}", str(i).encode()) for i in range(6)])
    handled: list[bytes] = []
    failures = 0

    async def handle(batch: Sequence[Message]) -> None:
        nonlocal failures
        if any(m.value == b"3" for m in batch) and failures < 3:
            failures += 1  # (alone, it fails twice more, then the database is back)
            raise ConnectionError("this one trips the handler")
        handled.extend(m.value for m in batch)

    stop = asyncio.Event()
    runner = ConsumerRunner(
        bus.consumer("g", [TOPIC]),
        handle,
        name="t",
        batch_size=10,
        linger=0.2,
        retry_backoff=Backoff(base=0.01, cap=0.02),
    )
    task = asyncio.create_task(runner.run(stop))
    await wait_until(lambda: len(handled) == 6)
    stop.set()
    await task
    assert sorted(handled) == [str(i).encode() for i in range(6)]
    assert await committed_total(bus) == 6
