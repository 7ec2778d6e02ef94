"""The embedded bus's log: what one publish reserves in each partition, on either database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from herald.bus.base import OutgoingMessage
from herald.bus.embedded import EmbeddedBus
from herald.errors import BusError
from herald.store.database import Database
from herald.store.tables import bus_messages, bus_partitions


async def offsets(db: Database) -> dict[int, list[int]]:
    async with db.read() as conn:
        rows = await conn.execute(
            sa.select(bus_messages.c.partition, bus_messages.c.offset).where(
                bus_messages.c.topic == "t"
            )
        )
        found: dict[int, list[int]] = {}
        for row in rows:
            found.setdefault(row.partition, []).append(row.offset)
    return {p: sorted(o) for p, o in found.items()}


async def test_each_publish_appends_contiguous_offsets_to_every_partition_it_touches(
    db: Database,
) -> None:
    bus = EmbeddedBus(db, partitions=4)
    await bus.ensure_topics(["t"])
    for _ in range(3):
        await bus.publish([OutgoingMessage("t", f"k{i}", b"v") for i in range(40)])
    by_partition = await offsets(db)
    assert len(by_partition) == 4
    for found in by_partition.values():
        assert found == list(range(len(found)))  # no gap, no offset twice
    assert sum(len(found) for found in by_partition.values()) == 120
    ends = await bus.end_offsets()
    assert {tp.partition: end for tp, end in ends.items() if tp.topic == "t"} == {
        p: len(found) for p, found in by_partition.items()
    }


async def test_a_publish_to_a_partition_that_is_gone_fails_whole(db: Database) -> None:
    bus = EmbeddedBus(db, partitions=4)
    await bus.ensure_topics(["t"])
    async with db.write() as conn:
        await conn.execute(
            sa.delete(bus_partitions).where(
                bus_partitions.c.topic == "t", bus_partitions.c.partition == 2
            )
        )
    with pytest.raises(BusError, match="does not exist"):
        await bus.publish([OutgoingMessage("t", f"k{i}", b"v") for i in range(40)])
    assert await offsets(db) == {}  # nothing of it was stored
