"""The transactional outbox: events written with the state change that caused them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from herald.bus.base import OutgoingMessage
from herald.bus.partitioner import partition_for
from herald.domain.models import OutboxStatus
from herald.store.bulk_insert import insert_many
from herald.store.database import Connection, Database
from herald.store.one_of import one_of
from herald.store.purge import delete_in_chunks
from herald.store.tables import outbox_events, outbox_shards

E = outbox_events.c
S = outbox_shards.c
_WAITING = (OutboxStatus.PENDING, OutboxStatus.FAILED)
SHARDS = 32  # rows of outbox_shards, created by the first migration
NOTIFY_CHANNEL = "herald_outbox"  # PostgreSQL: relays in other processes LISTEN on it


def shard_of(key: str) -> int:
    return partition_for(key, SHARDS)


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    id: int
    topic: str
    key: str
    payload: bytes
    headers: dict[str, str]
    attempts: int

    def message(self) -> OutgoingMessage:
        return OutgoingMessage(self.topic, self.key, self.payload, self.headers)


async def add(
    conn: Connection,
    messages: Sequence[OutgoingMessage],
    *,
    now: datetime,
    available_at: datetime | None = None,
) -> None:
    """Queue messages for the relay; ``available_at`` delays them (scheduled retries)."""
    await add_many(conn, [(m, available_at) for m in messages], now=now)


async def add_many(
    conn: Connection,
    messages: Sequence[tuple[OutgoingMessage, datetime | None]],
    *,
    now: datetime,
) -> None:
    """Queue messages for the relay, each due at its time (None: now), in one statement."""
    if messages:
        await insert_many(conn, [(outbox_events, rows(messages, now))], notify=notify(conn))


def rows(
    messages: Sequence[tuple[OutgoingMessage, datetime | None]], now: datetime
) -> list[dict[str, Any]]:
    """The outbox's rows for these messages, each due at its time (None: now)."""
    return [
        {
            "topic": m.topic,
            "key": m.key,
            "shard": shard_of(m.key),
            "payload": m.value,
            "headers": dict(m.headers),
            "status": OutboxStatus.PENDING,
            "attempts": 0,
            "available_at": available_at or now,
            "created_at": now,
        }
        for m, available_at in messages
    ]


def notify(conn: Connection) -> str | None:
    """The channel to NOTIFY with a write to the outbox: on PostgreSQL, delivered when the
    transaction commits, it wakes relays in other processes at once."""
    return NOTIFY_CHANNEL if conn.dialect.name == "postgresql" else None


async def due(
    conn: Connection,
    *,
    now: datetime,
    limit: int,
    shards: Sequence[int] | None = None,
    only: int | None = None,
) -> list[OutboxEvent]:
    """The oldest events ready to publish, in the order they were written.

    ``shards`` keeps to those shards; ``only`` to one event (if it is still waiting).
    """
    query = (
        sa.select(E.id, E.topic, E.key, E.payload, E.headers, E.attempts)
        .where(E.status.in_(_WAITING), E.available_at <= now)
        .order_by(E.id)
        .limit(limit)
    )
    if shards is not None:
        query = query.where(one_of(E.shard, "shards"))
    if only is not None:
        query = query.where(E.id == only)
    rows = await conn.execute(query, None if shards is None else {"shards": list(shards)})
    return [OutboxEvent(r.id, r.topic, r.key, r.payload, r.headers, r.attempts) for r in rows]


_MARK_PUBLISHED = (
    sa.update(outbox_events)
    .where(one_of(E.id, "ids"))
    .values(
        status=OutboxStatus.PUBLISHED,
        published_at=sa.bindparam("now", type_=E.published_at.type),
        locked_until=None,
    )
)


_DELETE = sa.delete(outbox_events).where(one_of(E.id, "ids"))


async def published(
    conn: Connection, ids: Sequence[int], now: datetime, *, keep: bool = False
) -> None:
    """These events are on the bus: their rows are deleted, or with ``keep`` marked PUBLISHED
    (and deleted by maintenance after the retention)."""
    if keep:
        await conn.execute(_MARK_PUBLISHED, {"ids": list(ids), "now": now})
    else:
        await conn.execute(_DELETE, {"ids": list(ids)})


async def claim_shards(
    conn: Connection, *, owner: str, now: datetime, lease_until: datetime, limit: int
) -> list[int]:
    """Lease up to ``limit`` free shards that have due events, the longest-unserved first."""
    with_due_events = sa.select(E.shard).where(E.status.in_(_WAITING), E.available_at <= now)
    query = (
        sa.select(S.shard)
        .where(
            S.shard.in_(with_due_events),
            sa.or_(S.locked_until.is_(None), S.locked_until < now),
        )
        .order_by(S.last_published_at.asc().nulls_first(), S.shard)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        # Two relays claiming at once each get different shards instead of waiting.
        query = query.with_for_update(skip_locked=True)
    shards = list((await conn.execute(query)).scalars())
    if shards:
        await conn.execute(
            sa.update(outbox_shards)
            .where(S.shard.in_(shards))
            .values(owner=owner, locked_until=lease_until)
        )
    return shards


async def release_shards(
    conn: Connection, *, owner: str, shards: Sequence[int], now: datetime
) -> None:
    await conn.execute(
        sa.update(outbox_shards)
        .where(S.shard.in_(shards), S.owner == owner)
        .values(owner=None, locked_until=None, last_published_at=now)
    )


async def record_failure(
    conn: Connection,
    event_id: int,
    *,
    attempts: int,
    error: str,
    retry_at: datetime,
    dead: bool,
) -> None:
    """The bus refused the event: try again at ``retry_at``, or give up (DEAD_LETTERED)."""
    await conn.execute(
        sa.update(outbox_events)
        .where(E.id == event_id)
        .values(
            status=OutboxStatus.DEAD_LETTERED if dead else OutboxStatus.FAILED,
            attempts=attempts,
            last_error=error[:2000],
            available_at=retry_at,
        )
    )


async def has_backlog(conn: Connection, *, older_than: datetime) -> bool:
    """Are events still waiting for the relay that were due before ``older_than``?"""
    waiting = await conn.scalar(
        sa.select(E.id)
        .where(E.status == OutboxStatus.PENDING, E.available_at < older_than)
        .limit(1)
    )
    return waiting is not None


async def purge_published(db: Database, before: datetime) -> int:
    published = sa.and_(E.status == OutboxStatus.PUBLISHED, E.published_at < before)
    return await delete_in_chunks(db, outbox_events, published)


async def backlog(conn: Connection, now: datetime) -> tuple[int, float]:
    """Events due but not yet published, and how long the oldest has been due (seconds).

    Not-yet-due events (retries waiting on the embedded bus) are not backlog."""
    due = sa.and_(E.status.in_(_WAITING), E.available_at <= now)
    count, oldest = (
        await conn.execute(sa.select(sa.func.count(), sa.func.min(E.available_at)).where(due))
    ).one()
    if oldest is None:
        return 0, 0.0
    return count, max((now - oldest).total_seconds(), 0.0)
