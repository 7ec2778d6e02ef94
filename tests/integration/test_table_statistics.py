"""Young tables get fresh planner statistics as they grow (PostgreSQL)."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from herald.pipeline.operations.statistics import StatisticsKeeper
from herald.store.database import Database
from herald.store.table_statistics import GROWTH, MIN_ROWS

ADD = sa.text(
    """
    INSERT INTO notifications (id, tenant_id, body, status, created_at, updated_at, priority)
    SELECT gen_random_uuid()::text, 'default', 'hello', 'PENDING', now(), now(), 'normal'
    FROM generate_series(1, :count)
    """
)
ANALYZED = sa.text(
    "SELECT relname, analyze_count FROM pg_stat_user_tables"
    " WHERE relname IN ('notifications', 'deliveries')"
)


async def add_notifications(db: Database, count: int) -> None:
    async with db.write() as conn:
        await conn.execute(ADD, {"count": count})
        # Counted in pg_stat_user_tables once this session reports its statistics.
        await conn.execute(sa.text("SELECT pg_stat_force_next_flush()"))


async def analyzed_after_growth(keeper: StatisticsKeeper) -> list[str]:
    """The tables a check analyzes, once the statistics have caught up (within 5 s)."""
    for _ in range(50):
        analyzed = await keeper.check_once()
        if analyzed:
            return analyzed
        await asyncio.sleep(0.1)
    return []


async def analyze_counts(db: Database) -> dict[str, int]:
    async with db.read() as conn:
        return {row.relname: row.analyze_count for row in await conn.execute(ANALYZED)}


@pytest.mark.postgres
async def test_a_table_is_analyzed_at_a_thousand_rows_then_each_time_it_quadruples(
    fresh_pg_url: str,
) -> None:
    db = Database(fresh_pg_url)
    keeper = StatisticsKeeper(db)
    try:
        await add_notifications(db, MIN_ROWS - 100)
        await asyncio.sleep(0.5)
        assert await keeper.check_once() == []  # too few rows to be worth it
        await add_notifications(db, 200)
        assert await analyzed_after_growth(keeper) == ["notifications"]
        assert await keeper.check_once() == []  # analyzed at 1 100 rows: not grown since
        assert await analyze_counts(db) == {"notifications": 1, "deliveries": 0}

        await add_notifications(db, MIN_ROWS * GROWTH)  # 5 100 rows: past four times 1 100
        # A process that analyzed it at 5 000 rows (as far as it knows: when the database only
        # warns, e.g. to a role that does not own the table) does not try again so soon.
        remembering = StatisticsKeeper(db)
        remembering.analyzed["notifications"] = 5_000
        await asyncio.sleep(1.5)  # the statistics have caught up by now
        assert await remembering.check_once() == []
        assert await analyzed_after_growth(keeper) == ["notifications"]
        assert (await analyze_counts(db))["notifications"] == 2
    finally:
        await db.close()


async def test_on_sqlite_there_is_nothing_to_keep(fresh_sqlite_url: str) -> None:
    db = Database(fresh_sqlite_url)
    try:
        assert await StatisticsKeeper(db).check_once() == []
    finally:
        await db.close()
