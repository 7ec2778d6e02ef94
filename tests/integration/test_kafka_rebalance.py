"""Consumer runners on Kafka while partitions move between group members."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator

import pytest

from herald.bus.base import Message, OutgoingMessage
from herald.bus.kafka import KafkaBus
from herald.bus.partitioner import partition_for
from herald.pipeline.runner import ConsumerRunner, one_at_a_time
from tests.kafka_broker import TansuBroker

pytestmark = pytest.mark.kafka


@pytest.fixture
async def bus(kafka_broker: TansuBroker) -> AsyncIterator[KafkaBus]:
    backend = KafkaBus(
        {"bootstrap.servers": kafka_broker.bootstrap}, partitions=4, session_timeout_ms=3000
    )
    await backend.start()
    yield backend
    await backend.close()


async def test_keys_land_where_the_partitioner_says(bus: KafkaBus) -> None:
    topic = f"placement.{uuid.uuid4().hex[:8]}"
    await bus.ensure_topics([topic])
    await bus.publish([OutgoingMessage(topic, f"user-{i}", b"x") for i in range(40)])
    consumer = bus.consumer(f"{topic}.reader", [topic])
    received: list[Message] = []
    for _ in range(200):
        received += await consumer.poll(100, 0.1)
        if len(received) == 40:
            break
    await consumer.close()
    assert len(received) == 40
    assert all(m.partition == partition_for(m.key or "", 4) for m in received)


async def test_members_joining_and_leaving_lose_and_repeat_nothing(bus: KafkaBus) -> None:
    topic, users = f"rebalance.{uuid.uuid4().hex[:8]}", 30
    group = f"{topic}.workers"
    await bus.ensure_topics([topic])
    published: list[tuple[str, int]] = []
    handled: list[tuple[str, int, str]] = []
    rng = random.Random(3)

    async def publish_steadily(stop: asyncio.Event) -> None:
        seq = 0
        while not stop.is_set():
            batch = [
                OutgoingMessage(topic, f"user-{u}", b"", {"seq": str(seq)}) for u in range(users)
            ]
            await bus.publish(batch)
            published.extend((f"user-{u}", seq) for u in range(users))
            seq += 1
            await asyncio.sleep(0.1)

    def handler_for(member: str):  # type: ignore[no-untyped-def]
        async def handle(message: Message) -> None:
            await asyncio.sleep(rng.uniform(0.001, 0.005))
            handled.append((message.key or "", int(message.headers["seq"]), member))

        return handle

    def members_seen() -> set[str]:
        return {member for _, _, member in handled}

    stop_publishing, stop_a, stop_b = asyncio.Event(), asyncio.Event(), asyncio.Event()
    publisher = asyncio.create_task(publish_steadily(stop_publishing))
    runner_a = ConsumerRunner(
        bus.consumer(group, [topic]), one_at_a_time(handler_for("a")), name="a"
    )
    task_a = asyncio.create_task(runner_a.run(stop_a))
    await _until(lambda: len(handled) >= 60)

    # B joins: some of A's partitions move to it (A drains and commits them first).
    runner_b = ConsumerRunner(
        bus.consumer(group, [topic]), one_at_a_time(handler_for("b")), name="b"
    )
    task_b = asyncio.create_task(runner_b.run(stop_b))
    await _until(lambda: "b" in members_seen())
    handled_before_leaving = len(handled)

    # A leaves: the rest move to B.
    stop_a.set()
    await task_a
    await _until(lambda: len(handled) > handled_before_leaving + 3 * users)
    stop_publishing.set()
    await publisher
    await _until(lambda: len({(k, s) for k, s, _ in handled}) == len(published))
    stop_b.set()
    await task_b

    counts = Counter((k, s) for k, s, _ in handled)
    duplicates = sum(n - 1 for n in counts.values())
    first_seen: dict[str, list[int]] = defaultdict(list)
    for key, seq, _ in handled:
        if seq not in first_seen[key]:
            first_seen[key].append(seq)
    print(f"\npublished={len(published)} handled={len(handled)} duplicates={duplicates}")
    assert set(counts) == set(published)  # nothing lost
    assert all(seqs == sorted(seqs) for seqs in first_seen.values())  # in order per key
    assert duplicates == 0  # graceful hand-overs commit what was done


async def _until(condition, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)
