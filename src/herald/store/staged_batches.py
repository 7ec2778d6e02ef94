"""Staged batches: a large batch accepted as one row, its notifications written out later.

A batch's rows are taken by deleting them (``DELETE … RETURNING``) in the transaction that
writes their notifications, so a batch is expanded exactly once: a second taker on PostgreSQL
waits for the first's row lock and then finds the row gone. A tenant's batches are expanded in
id order (their acceptance order): a batch waiting to be retried after a failed expansion holds
back the tenant's later ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from herald.store.database import Connection
from herald.store.tables import staged_batches

B = staged_batches.c


@dataclass(frozen=True, slots=True)
class StagedBatch:
    id: int
    tenant_id: str
    created_at: datetime
    count: int
    payload: bytes


def row(tenant: str, created_at: datetime, ids: Sequence[str], payload: bytes) -> dict[str, Any]:
    """A batch's row (its id is the database's, in insertion order)."""
    return {
        "tenant_id": tenant,
        "created_at": created_at,
        "count": len(ids),
        "first_id": min(ids),
        "last_id": max(ids),
        "payload": payload,
        "attempts": 0,
    }


def pending_of(tenant: str | sa.BindParameter[str]) -> sa.Exists:
    """Whether ``tenant`` has a batch not yet expanded, as an expression (to ask with others
    in one statement)."""
    return sa.exists().where(B.tenant_id == tenant)


async def pending(conn: Connection, tenant: str) -> bool:
    """Whether ``tenant`` has a batch not yet expanded."""
    return bool((await conn.execute(sa.select(pending_of(tenant)))).scalar())


async def waiting(conn: Connection, *, now: datetime) -> bool:
    """Whether any batch is due to be expanded (not one that waits for its retry)."""
    return (await conn.execute(sa.select(B.id).where(_due(now)).limit(1))).first() is not None


async def holding(conn: Connection, tenant: str, notification_id: str) -> int | None:
    """The newest of ``tenant``'s batches whose ids span ``notification_id`` (ids of batches
    accepted in the same millisecond may interleave), or None."""
    found = await conn.execute(
        sa.select(sa.func.max(B.id)).where(
            B.tenant_id == tenant, B.first_id <= notification_id, B.last_id >= notification_id
        )
    )
    batch_id: int | None = found.scalar()
    return batch_id


def _blocked(now: datetime) -> sa.ColumnElement[bool]:
    """A batch with an older one of its tenant waiting for a retry: it may not go first."""
    older = staged_batches.alias("older")
    return sa.exists().where(
        older.c.tenant_id == B.tenant_id, older.c.id < B.id, older.c.next_try_at > now
    )


def _due(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(sa.or_(B.next_try_at.is_(None), B.next_try_at <= now), sa.not_(_blocked(now)))


async def take(conn: Connection, *, now: datetime, limit: int) -> list[StagedBatch]:
    """Delete and return the oldest due batches (at most ``limit``), in id order."""
    chosen = sa.select(B.id).where(_due(now)).order_by(B.id).limit(limit)
    return await _take(conn, B.id.in_(chosen.scalar_subquery()))


async def take_tenant(
    conn: Connection, tenant: str, *, now: datetime, up_to: int | None = None
) -> list[StagedBatch]:
    """Delete and return ``tenant``'s batches up to the id ``up_to`` (all: None), in id order,
    stopping before one that waits for a retry (it would fail again here)."""
    condition = sa.and_(B.tenant_id == tenant, _due(now), sa.not_(_after_failed(tenant)))
    if up_to is not None:
        condition = sa.and_(condition, B.id <= up_to)
    return await _take(conn, condition)


def _after_failed(tenant: str) -> sa.ColumnElement[bool]:
    failed = staged_batches.alias("failed")
    return sa.exists().where(
        failed.c.tenant_id == tenant, failed.c.attempts > 0, failed.c.id <= B.id
    )


async def _take(conn: Connection, condition: sa.ColumnElement[bool]) -> list[StagedBatch]:
    result = await conn.execute(
        sa.delete(staged_batches)
        .where(condition)
        .returning(B.id, B.tenant_id, B.created_at, B.count, B.payload)
    )
    batches = [StagedBatch(r.id, r.tenant_id, r.created_at, r.count, r.payload) for r in result]
    return sorted(batches, key=lambda b: b.id)  # RETURNING keeps no order


async def take_one(conn: Connection, batch_id: int, *, now: datetime) -> list[StagedBatch]:
    """Delete and return this batch if it is due and no older one of its tenant waits."""
    return await _take(conn, sa.and_(B.id == batch_id, _due(now)))


async def record_failure(
    conn: Connection,
    batch_id: int,
    *,
    error: str,
    now: datetime,
    retry_after: Callable[[int], float],
) -> int:
    """Note a failed expansion (it was rolled back): tried again ``retry_after(attempts)``
    seconds from now. Returns the attempts so far."""
    found = await conn.execute(sa.select(B.attempts).where(B.id == batch_id))
    attempts = int(found.scalar() or 0) + 1
    await conn.execute(
        sa.update(staged_batches)
        .where(B.id == batch_id)
        .values(
            attempts=attempts,
            last_error=error[:2000],
            next_try_at=now + timedelta(seconds=retry_after(attempts)),
        )
    )
    return attempts


async def backlog(conn: Connection) -> int:
    """Notifications waiting in batches to be expanded."""
    return int((await conn.execute(sa.select(sa.func.sum(B.count)))).scalar() or 0)


@dataclass(frozen=True, slots=True)
class Waiting:
    """A staged batch as an operator sees it (not its payload)."""

    id: int
    tenant_id: str
    created_at: datetime
    count: int
    attempts: int
    last_error: str | None
    next_try_at: datetime | None


async def listing(conn: Connection, *, failed: bool, limit: int) -> list[Waiting]:
    """Batches waiting to be written out, oldest first; with ``failed``, those that failed."""
    query = sa.select(
        B.id, B.tenant_id, B.created_at, B.count, B.attempts, B.last_error, B.next_try_at
    )
    if failed:
        query = query.where(B.attempts > 0)
    rows = await conn.execute(query.order_by(B.id).limit(limit))
    return [Waiting(*row) for row in rows]


async def retry_now(conn: Connection, batch_ids: Sequence[int] | None, now: datetime) -> int:
    """Make failed batches due now (all of them, with None); how many."""
    statement = sa.update(staged_batches).where(B.attempts > 0, B.next_try_at > now)
    if batch_ids is not None:
        statement = statement.where(B.id.in_(list(batch_ids)))
    result = await conn.execute(statement.values(next_try_at=now))
    return result.rowcount or 0
