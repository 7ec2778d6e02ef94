"""Statements whose spelling differs between SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from herald.store.database import Connection


def _insert(conn: Connection, table: sa.Table) -> Any:
    module = sqlite if conn.dialect.name == "sqlite" else postgresql
    return module.insert(table)


async def insert_ignore(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT rows, silently skipping those whose primary key already exists."""
    if rows:
        await conn.execute(_insert(conn, table).on_conflict_do_nothing(), list(rows))


async def upsert(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    update: Sequence[str],
) -> None:
    """INSERT rows; where the primary key exists, overwrite the ``update`` columns."""
    if not rows:
        return
    stmt = _insert(conn, table)
    keys = [c.name for c in table.primary_key.columns]
    stmt = stmt.on_conflict_do_update(
        index_elements=keys, set_={name: stmt.excluded[name] for name in update}
    )
    await conn.execute(stmt, list(rows))


async def insert_if_absent(conn: Connection, table: sa.Table, values: dict[str, Any]) -> bool:
    """INSERT one row unless its primary key exists; True if it was inserted."""
    result = await conn.execute(_insert(conn, table).on_conflict_do_nothing().values(**values))
    return bool(result.rowcount)


async def lock_until_commit(conn: Connection, key: str) -> None:
    """Hold a lock named ``key`` until this transaction ends, so that a read-then-write on
    ``key`` does not interleave with another's. SQLite needs none: it has one writer, and
    Herald's write transactions start with BEGIN IMMEDIATE."""
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256(key.encode()).digest()
        lock_id = int.from_bytes(digest[:8], "big", signed=True)
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_id)))
