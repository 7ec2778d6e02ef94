"""PostgreSQL reads run each statement in its own transaction (no BEGIN/COMMIT round trips);
writes keep one transaction for the whole block."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from herald.store.database import Connection, Database

NOW = sa.text("SELECT now()")  # the start of the statement's transaction


async def one_transaction(conn: Connection) -> bool:
    first = await conn.scalar(NOW)
    await asyncio.sleep(0.01)
    return bool(first == await conn.scalar(NOW))


async def test_a_read_runs_each_statement_alone_and_a_write_in_one_transaction(
    fresh_pg_url: str,
) -> None:
    db = Database(fresh_pg_url)
    try:
        async with db.read() as conn:
            assert not await one_transaction(conn)
        async with db.write() as conn:
            assert await one_transaction(conn)
        async with db.read() as conn:  # the pool's connection is a reader again
            assert not await one_transaction(conn)
    finally:
        await db.close()
