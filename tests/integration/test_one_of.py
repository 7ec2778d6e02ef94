"""one_of: an IN condition whose values come at execution, the same statement for any number."""

from __future__ import annotations

import sqlalchemy as sa

from herald.clock import utcnow
from herald.store.database import Database
from herald.store.dialect import one_of
from herald.store.tables import outbox_events

E = outbox_events.c
# One statement object, executed with lists of every length: a cached compiled form must never
# carry one execution's values into the next.
_TOPICS_OF = sa.select(E.topic).where(one_of(E.id, "ids")).order_by(E.id)


async def test_the_same_statement_finds_exactly_the_values_of_each_execution(db: Database) -> None:
    now = utcnow()
    rows = [
        {"topic": f"t{i}", "key": "k", "shard": 0, "payload": b"", "headers": {}}
        | {"status": "PENDING", "attempts": 0, "available_at": now, "created_at": now}
        for i in range(5)
    ]
    async with db.write() as conn:
        await conn.execute(sa.insert(outbox_events), rows)
        ids = (await conn.execute(sa.select(E.id).order_by(E.id))).scalars().all()
    async with db.read() as conn:
        found = [
            (await conn.execute(_TOPICS_OF, {"ids": chosen})).scalars().all()
            for chosen in ([ids[1]], [ids[0], ids[3], ids[4]], [], [ids[2], -1], ids)
        ]
    assert found == [["t1"], ["t0", "t3", "t4"], [], ["t2"], [f"t{i}" for i in range(5)]]


async def test_on_postgresql_it_is_one_array_parameter(db: Database) -> None:
    async with db.read() as conn:
        sql = str(_TOPICS_OF.compile(dialect=conn.dialect))
    if conn.dialect.name == "postgresql":
        assert "= ANY ($1::BIGINT[])" in sql
    else:
        assert "IN (__[POSTCOMPILE_ids])" in sql
