"""Concurrent Idempotency-Key look-ups share a read, and each gets its own answer."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa

from herald.clock import utcnow
from herald.pipeline.idempotency_reads import IdempotencyReads
from herald.store import idempotency
from herald.store.database import Database
from herald.store.idempotency import StoredResponse
from herald.store.tables import idempotency_keys


async def test_concurrent_look_ups_are_one_statement_and_each_gets_its_answer(
    db: Database,
) -> None:
    now = utcnow()
    stored = {f"k{i}": StoredResponse(f"h{i}", f"n{i}", 202, {"id": f"n{i}"}) for i in range(10)}
    async with db.write() as conn:
        for key, response in stored.items():
            await idempotency.save(conn, "tenant:a", key, response, now=now, ttl_seconds=60)
        old = StoredResponse("h", "n", 202, {})
        await idempotency.save(conn, "tenant:a", "old", old, now=now, ttl_seconds=-1)
        await idempotency.save(conn, "tenant:b", "k0", old, now=now, ttl_seconds=60)

    statements: list[str] = []

    def count(*args: Any) -> None:
        if str(args[2]).lstrip().upper().startswith("SELECT"):
            statements.append(str(args[2]))

    engine = db.read_engine  # the reads go through it
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        reads = IdempotencyReads(db)
        keys = [*stored, "missing", "old"]
        found = await asyncio.gather(*(reads.find("tenant:a", key) for key in keys))
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)

    assert found[:10] == list(stored.values())
    assert found[10:] == [None, None]  # never stored; expired
    assert len(statements) == 1, statements
    async with db.read() as conn:
        left = await conn.scalar(
            sa.select(sa.func.count()).where(
                idempotency_keys.c.scope == "tenant:a", idempotency_keys.c.key == "old"
            )
        )
    assert left == 0  # the expired response is forgotten: its key may be used again
    # Another tenant's key of the same name is its own.
    assert await reads.find("tenant:b", "k0") == old


async def test_a_look_up_after_expiry_finds_nothing(db: Database) -> None:
    now = utcnow()
    async with db.write() as conn:
        response = StoredResponse("h", "n", 202, {})
        await idempotency.save(conn, "s", "k", response, now=now, ttl_seconds=0.2)
    reads = IdempotencyReads(db)
    assert await reads.find("s", "k") == response
    await asyncio.sleep(0.3)
    assert await reads.find("s", "k") is None
