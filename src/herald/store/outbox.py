"""The transactional outbox: events written with the state change that caused them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.bus.base import OutgoingMessage
from herald.domain.models import OutboxStatus
from herald.store.tables import outbox_events

E = outbox_events.c
_WAITING = (OutboxStatus.PENDING, OutboxStatus.FAILED)


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
    conn: AsyncConnection,
    messages: Sequence[OutgoingMessage],
    *,
    now: datetime,
    available_at: datetime | None = None,
) -> None:
    """Queue messages for the relay; ``available_at`` delays them (scheduled retries)."""
    if not messages:
        return
    await conn.execute(
        sa.insert(outbox_events),
        [
            {
                "topic": m.topic,
                "key": m.key,
                "payload": m.value,
                "headers": dict(m.headers),
                "status": OutboxStatus.PENDING,
                "attempts": 0,
                "available_at": available_at or now,
                "created_at": now,
            }
            for m in messages
        ],
    )


async def due(conn: AsyncConnection, *, now: datetime, limit: int) -> list[OutboxEvent]:
    """The oldest events ready to publish, in the order they were written."""
    rows = await conn.execute(
        sa.select(E.id, E.topic, E.key, E.payload, E.headers, E.attempts)
        .where(E.status.in_(_WAITING), E.available_at <= now)
        .order_by(E.id)
        .limit(limit)
    )
    return [OutboxEvent(r.id, r.topic, r.key, r.payload, r.headers, r.attempts) for r in rows]


async def mark_published(conn: AsyncConnection, ids: Sequence[int], now: datetime) -> None:
    await conn.execute(
        sa.update(outbox_events)
        .where(E.id.in_(ids))
        .values(status=OutboxStatus.PUBLISHED, published_at=now, locked_until=None)
    )


async def record_failure(
    conn: AsyncConnection,
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


async def purge_published(conn: AsyncConnection, before: datetime) -> int:
    result = await conn.execute(
        sa.delete(outbox_events).where(E.status == OutboxStatus.PUBLISHED, E.published_at < before)
    )
    return result.rowcount or 0
