"""The embedded bus: a durable, partitioned log stored in Herald's own SQL database.

- ``bus_partitions`` holds each partition's next offset. Appending increments it with an
  UPDATE, whose row lock (PostgreSQL) or the database write lock (SQLite) is held until
  commit, so offsets become visible in order and a reader never skips one.
- ``bus_messages`` holds the messages; ``bus_group_offsets`` each group's next offset.
- ``bus_group_leases`` makes one process the consumer of a group; another process with the
  same group waits as a standby and takes over when the lease lapses (crash, stop).

Because the log lives in the same database as the outbox, the relay appends and marks the
outbox rows published in one transaction: exactly once, with no window for duplicates.
"""

from __future__ import annotations

import functools
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from herald.bus.base import Bus, Consumer, Message, OutgoingMessage, Position, TopicPartition
from herald.bus.partitioner import partition_for
from herald.clock import seconds_from_now, utcnow
from herald.errors import BusError
from herald.observability.logging import get_logger
from herald.store.bulk_insert import insert_rows
from herald.store.database import Connection, Database
from herald.store.dialect import insert_ignore, upsert
from herald.store.purge import delete_in_chunks
from herald.store.tables import bus_group_leases, bus_group_offsets, bus_messages, bus_partitions
from herald.wakeup import Wakeup, wait_for_event

log = get_logger(__name__)


class EmbeddedBus(Bus):
    name = "embedded"
    transactional = True

    def __init__(
        self,
        db: Database,
        *,
        partitions: int = 4,
        poll_interval: float = 0.2,
        group_lease_seconds: float = 10.0,
    ) -> None:
        self.db = db
        self.default_partitions = partitions
        self.poll_interval = poll_interval
        self.group_lease_seconds = group_lease_seconds
        self.wakeup = Wakeup()
        self._partition_counts: dict[str, int] = {}

    async def ping(self) -> None:
        await self.db.ping()

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        async with self.db.write() as conn:
            for topic in topics:
                await self._partition_count(conn, topic)

    async def _partition_count(self, conn: Connection, topic: str) -> int:
        """The topic's partition count, creating the topic with the default count if new."""
        count = self._partition_counts.get(topic)
        if count is None:
            count = await conn.scalar(
                sa.select(sa.func.count()).where(bus_partitions.c.topic == topic)
            )
            if not count:
                count = self.default_partitions
                rows = [{"topic": topic, "partition": p, "next_offset": 0} for p in range(count)]
                await insert_ignore(conn, bus_partitions, rows)
            self._partition_counts[topic] = count
        return count

    async def publish_in(self, conn: Connection, messages: Sequence[OutgoingMessage]) -> None:
        by_partition: dict[TopicPartition, list[OutgoingMessage]] = defaultdict(list)
        for message in messages:
            count = await self._partition_count(conn, message.topic)
            by_partition[TopicPartition(message.topic, partition_for(message.key, count))].append(
                message
            )
        now = utcnow()
        ends = await self._advance(conn, {tp: len(batch) for tp, batch in by_partition.items()})
        rows: list[dict[str, Any]] = []
        for tp, batch in sorted(by_partition.items()):
            first = ends[tp] - len(batch)
            rows.extend(
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "offset": first + i,
                    "key": m.key,
                    "value": m.value,
                    "headers": dict(m.headers),
                    "created_at": now,
                }
                for i, m in enumerate(batch)
            )
        await insert_rows(conn, bus_messages, rows)

    async def _advance(
        self, conn: Connection, counts: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """Reserve ``counts[tp]`` offsets in each partition; each one's new end offset."""
        ordered = sorted(counts)
        ends: dict[TopicPartition, int] = {}
        if not ordered:
            return ends
        if self.db.is_sqlite:
            # One statement for all: SQLite's write lock is the database's, taken already.
            params: dict[str, Any] = {}
            for i, tp in enumerate(ordered):
                params |= {f"t{i}": tp.topic, f"p{i}": tp.partition, f"n{i}": counts[tp]}
            for row in await conn.execute(_advance_statement(len(ordered)), params):
                ends[TopicPartition(row.topic, row.partition)] = row.next_offset
        else:
            # One partition at a time, in order: PostgreSQL locks the rows in that order, so
            # two transactions publishing to the same partitions never deadlock.
            for tp in ordered:
                end = await conn.scalar(
                    _ADVANCE,
                    {"b_topic": tp.topic, "b_partition": tp.partition, "count": counts[tp]},
                )
                if end is not None:
                    ends[tp] = end
        missing = [tp for tp in ordered if tp not in ends]
        if missing:
            for tp in missing:
                self._partition_counts.pop(tp.topic, None)  # cached from a rolled-back creation
            raise BusError(f"embedded bus: partition {missing[0]} does not exist")
        return ends

    def after_commit(self, topics: Collection[str]) -> None:
        self.wakeup.notify(topics)

    async def _publish(self, messages: Sequence[OutgoingMessage]) -> None:
        async with self.db.write() as conn:
            await self.publish_in(conn, messages)
        self.after_commit({m.topic for m in messages})

    def consumer(self, group: str, topics: Sequence[str]) -> EmbeddedConsumer:
        return EmbeddedConsumer(self, group, list(topics))

    async def delete_older_than(self, cutoff: datetime) -> int:
        """Retention: drop messages older than ``cutoff`` (as Kafka's retention.ms does)."""
        return await delete_in_chunks(self.db, bus_messages, bus_messages.c.created_at < cutoff)

    async def positions(self, group: str, topics: Sequence[str]) -> dict[TopicPartition, Position]:
        ends = await self.end_offsets()
        committed = await self.committed(group)
        return {
            tp: Position(committed.get(tp, 0), end)
            for tp, end in ends.items()
            if tp.topic in topics
        }

    async def end_offsets(self) -> dict[TopicPartition, int]:
        async with self.db.read() as conn:
            rows = await conn.execute(sa.select(bus_partitions))
            return {TopicPartition(r.topic, r.partition): r.next_offset for r in rows}

    async def committed(self, group: str) -> dict[TopicPartition, int]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(bus_group_offsets).where(bus_group_offsets.c.group_id == group)
            )
            return {TopicPartition(r.topic, r.partition): r.committed_offset for r in rows}


# Built once: a statement reused keeps its compiled form and cache key.
_ADVANCE = (
    sa.update(bus_partitions)
    .where(
        bus_partitions.c.topic == sa.bindparam("b_topic"),
        bus_partitions.c.partition == sa.bindparam("b_partition"),
    )
    .values(next_offset=bus_partitions.c.next_offset + sa.bindparam("count", type_=sa.Integer))
    .returning(bus_partitions.c.next_offset)
)


@functools.lru_cache(maxsize=64)
def _advance_statement(partitions: int) -> sa.TextClause:
    """Move the end of ``partitions`` partitions at once, bound as t<i>, p<i>, n<i> (SQLite:
    UPDATE … RETURNING, 3.35+)."""
    match = [f'(topic = :t{i} AND "partition" = :p{i})' for i in range(partitions)]
    step = " ".join(f"WHEN {m} THEN :n{i}" for i, m in enumerate(match))
    sql = (
        f"UPDATE bus_partitions SET next_offset = next_offset + CASE {step} END"
        f" WHERE {' OR '.join(match)}"
        ' RETURNING topic, "partition", next_offset'
    )
    return sa.text(sql)


@functools.lru_cache(maxsize=64)
def _fetch_statement(partitions: int) -> sa.TextualSelect:
    """The next messages of ``partitions`` partitions, bound as t<i>, p<i>, o<i> and share.

    Written as text and built once per partition count: consumers run it on every poll, and
    composing the equivalent UNION of subqueries in SQLAlchemy each time cost more CPU than
    everything else a delivery does (benchmarks/hotpath.py)."""
    columns = ", ".join(f'"{c.name}"' for c in bus_messages.c)
    one = (
        f"SELECT * FROM (SELECT {columns} FROM bus_messages"
        ' WHERE topic = :t{i} AND "partition" = :p{i} AND "offset" >= :o{i}'
        ' ORDER BY "offset" LIMIT :share) AS part{i}'
    )
    sql = " UNION ALL ".join(one.format(i=i) for i in range(partitions))
    return sa.text(sql).columns(*bus_messages.c)


class EmbeddedConsumer(Consumer):
    def __init__(self, bus: EmbeddedBus, group: str, topics: list[str]) -> None:
        self.bus = bus
        self.group = group
        self.topics = topics
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._assignment: frozenset[TopicPartition] = frozenset()
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._renew_at = 0.0  # monotonic time of the next lease renewal
        self._wake = bus.wakeup.subscribe(topics)

    # -- group lease ---------------------------------------------------------------------

    async def _keep_lease(self) -> None:
        if time.monotonic() < self._renew_at:
            return
        lease = self.bus.group_lease_seconds
        now = utcnow()
        async with self.bus.db.write() as conn:
            holder = (
                await conn.execute(
                    sa.select(bus_group_leases).where(bus_group_leases.c.group_id == self.group)
                )
            ).first()
            held = holder is None or holder.owner == self.owner or holder.lease_until < now
            if held:
                await upsert(
                    conn,
                    bus_group_leases,
                    [
                        {
                            "group_id": self.group,
                            "owner": self.owner,
                            "lease_until": seconds_from_now(lease, now),
                        }
                    ],
                    update=["owner", "lease_until"],
                )
                if not self._assignment:
                    await self._assign(conn)
        if held:
            self._renew_at = time.monotonic() + lease / 3
            return
        self._renew_at = time.monotonic() + min(1.0, lease / 3)
        if self._assignment:
            assert holder is not None
            log.warning("bus.lease_lost", group=self.group, holder=holder.owner)
            lost, self._assignment, self._positions = self._assignment, frozenset(), {}
            if self.listener is not None:
                await self.listener.lost(lost)

    async def _assign(self, conn: Connection) -> None:
        partitions = await conn.execute(
            sa.select(bus_partitions.c.topic, bus_partitions.c.partition).where(
                bus_partitions.c.topic.in_(self.topics)
            )
        )
        assignment = frozenset(TopicPartition(r.topic, r.partition) for r in partitions)
        missing = set(self.topics) - {tp.topic for tp in assignment}
        if missing:
            raise BusError(f"embedded bus: topics {sorted(missing)} do not exist")
        committed = await conn.execute(
            sa.select(bus_group_offsets).where(bus_group_offsets.c.group_id == self.group)
        )
        offsets = {TopicPartition(r.topic, r.partition): r.committed_offset for r in committed}
        self._positions = {tp: offsets.get(tp, 0) for tp in assignment}
        self._assignment = assignment
        log.info("bus.assigned", group=self.group, owner=self.owner, partitions=len(assignment))

    # -- Consumer ------------------------------------------------------------------------

    def assignment(self) -> frozenset[TopicPartition]:
        return self._assignment

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self._paused.update(partitions)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self._paused.difference_update(partitions)

    async def poll(self, max_messages: int, timeout: float) -> list[Message]:
        deadline = time.monotonic() + timeout
        while True:
            await self._keep_lease()
            self._wake.clear()  # before reading, so a publish after the read still wakes us
            messages = await self._fetch(max_messages)
            remaining = deadline - time.monotonic()
            if messages or remaining <= 0:
                return messages
            await wait_for_event(self._wake, min(remaining, self.bus.poll_interval))

    async def _fetch(self, max_messages: int) -> list[Message]:
        active = sorted(self._assignment - self._paused)
        if not active or max_messages <= 0:
            return []
        # An equal share per partition, in one statement: a busy partition cannot starve
        # the others, and the database is asked once rather than once per partition.
        params: dict[str, Any] = {"share": -(-max_messages // len(active))}
        for i, tp in enumerate(active):
            params |= {f"t{i}": tp.topic, f"p{i}": tp.partition, f"o{i}": self._positions[tp]}
        async with self.bus.db.read() as conn:
            rows = (await conn.execute(_fetch_statement(len(active)), params)).all()
        rows = sorted(rows, key=lambda r: (r.topic, r.partition, r.offset))
        messages = []
        for r in rows:
            messages.append(
                Message(r.topic, r.partition, r.offset, r.key, r.value, r.headers, r.created_at)
            )
            self._positions[TopicPartition(r.topic, r.partition)] = r.offset + 1
        return messages

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return
        now = utcnow()
        rows = [
            {
                "group_id": self.group,
                "topic": tp.topic,
                "partition": tp.partition,
                "committed_offset": offset,
                "updated_at": now,
            }
            for tp, offset in offsets.items()
        ]
        async with self.bus.db.write() as conn:
            # Fencing: a consumer that lost its lease must not move the group's offsets.
            owner = await conn.scalar(
                sa.select(bus_group_leases.c.owner).where(bus_group_leases.c.group_id == self.group)
            )
            if owner != self.owner:
                raise BusError(f"embedded bus: {self.owner} no longer owns group {self.group}")
            await upsert(conn, bus_group_offsets, rows, update=["committed_offset", "updated_at"])

    async def close(self) -> None:
        self.bus.wakeup.unsubscribe(self._wake)
        if not self._assignment:
            return
        # Hand the group over at once instead of making a successor wait for the lease.
        async with self.bus.db.write() as conn:
            await conn.execute(
                sa.delete(bus_group_leases).where(
                    bus_group_leases.c.group_id == self.group,
                    bus_group_leases.c.owner == self.owner,
                )
            )
        self._assignment = frozenset()
