"""Concurrent Idempotency-Key look-ups share a read, and each gets its own answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from herald.clock import utcnow
from herald.pipeline.idempotency_reads import IdempotencyReads
from herald.store import idempotency
from herald.store.database import Database
from herald.store.idempotency import StoredResponse
from herald.store.idempotency_cache import IdempotencyCache
from herald.store.tables import idempotency_keys
from tests.conftest import SHARED_REDIS_URL


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


@pytest.mark.redis
async def test_with_a_cache_concurrent_writes_and_look_ups_share_round_trips(
    db: Database, redis_prefix: str
) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(SHARED_REDIS_URL)
    commands: list[str] = []
    pipeline, mget = redis.pipeline, redis.mget

    def counted_pipeline(*args: Any, **kwargs: Any) -> Any:
        commands.append("pipeline")
        return pipeline(*args, **kwargs)

    async def counted_mget(*args: Any, **kwargs: Any) -> Any:
        commands.append("mget")
        return await mget(*args, **kwargs)

    redis.pipeline = counted_pipeline  # type: ignore[method-assign]
    redis.mget = counted_mget  # type: ignore[method-assign]
    cache = IdempotencyCache(redis, prefix=redis_prefix)
    cached = {f"c{i}": StoredResponse(f"h{i}", f"n{i}", 202, {"id": f"n{i}"}) for i in range(20)}
    await asyncio.gather(*(cache.put("tenant:a", k, r, ttl=60) for k, r in cached.items()))
    assert commands == ["pipeline"]  # twenty writes, one round trip

    only_in_db = StoredResponse("hd", "nd", 202, {"id": "nd"})
    async with db.write() as conn:
        await idempotency.save(conn, "tenant:a", "d", only_in_db, now=utcnow(), ttl_seconds=60)
    selects: list[str] = []

    def count(*args: Any) -> None:
        if str(args[2]).lstrip().upper().startswith("SELECT"):
            selects.append(str(args[2]))

    sa.event.listen(db.read_engine, "before_cursor_execute", count)
    try:
        reads = IdempotencyReads(db, cache)
        keys = [*cached, "d", "missing"]
        found = await asyncio.gather(*(reads.find("tenant:a", key) for key in keys))
        sent = list(commands)
    finally:
        sa.event.remove(db.read_engine, "before_cursor_execute", count)
    try:
        copied = await cache.get_many([("tenant:a", "d")])
        ttl_ms = await redis.pttl(f"{redis_prefix}idempotency:tenant:a:d")
    finally:
        await redis.aclose()

    assert found == [*cached.values(), only_in_db, None]
    # Twenty-two look-ups, one MGET; one read for the two Redis lacks; the repeat found in the
    # database is copied to Redis.
    assert sent == ["pipeline", "mget", "pipeline"]
    assert len(selects) == 1
    assert copied == {("tenant:a", "d"): only_in_db}
    assert 55_000 < ttl_ms <= 60_000  # until the stored response expires
