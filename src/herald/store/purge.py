"""Housekeeping deletes, a chunk per transaction.

A purge that deletes a day's worth of rows in one statement holds the write lock for all of it,
and on SQLite, whose statements run on the event loop (sqlite_inline), stops the loop as long:
every request and stage would wait. A chunk at a time, each waits for one chunk at most.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from herald.store.database import Database

CHUNK = 2000


async def delete_in_chunks(
    db: Database, table: sa.Table, where: sa.ColumnElement[bool], *, chunk: int = CHUNK
) -> int:
    """Delete the rows of ``table`` that match ``where``; how many there were."""
    key = table.primary_key.columns
    some = sa.select(*key).where(where).limit(chunk)
    statement = sa.delete(table).where(sa.tuple_(*key).in_(some))
    deleted = 0
    while True:
        async with db.write() as conn:
            count = (await conn.execute(statement)).rowcount or 0
        deleted += count
        if count < chunk:
            return deleted
        await asyncio.sleep(0)  # let others take the write lock between chunks
