"""Housekeeping deletes go a chunk per transaction (store/purge.py), so neither the write lock
nor, on SQLite, the event loop is held for a whole purge."""

from __future__ import annotations

import sqlalchemy as sa

from herald.clock import utcnow
from herald.store import idempotency
from herald.store.database import Database
from herald.store.idempotency import StoredResponse
from herald.store.purge import delete_in_chunks
from herald.store.tables import idempotency_keys


async def test_a_purge_deletes_everything_it_matches_a_chunk_per_transaction(
    db: Database,
) -> None:
    now = utcnow()
    response = StoredResponse("h", "n", 202, {})
    async with db.write() as conn:
        for i in range(7):
            await idempotency.save(conn, "s", f"old{i}", response, now=now, ttl_seconds=-1)
        for i in range(2):
            await idempotency.save(conn, "s", f"new{i}", response, now=now, ttl_seconds=60)
    commits = db.commits

    expired = idempotency_keys.c.expires_at <= now
    assert await delete_in_chunks(db, idempotency_keys, expired, chunk=3) == 7

    assert db.commits - commits == 3  # 3 + 3 + 1
    async with db.read() as conn:
        left = (await conn.execute(sa.select(idempotency_keys.c.key))).scalars().all()
    assert sorted(left) == ["new0", "new1"]
    assert await idempotency.purge_expired(db, now) == 0
