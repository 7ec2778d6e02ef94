"""Each worker's circuit breaker per provider, written on every change so the API can show it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from herald.store.database import Connection
from herald.store.dialect import upsert
from herald.store.tables import provider_circuits


@dataclass(frozen=True, slots=True)
class CircuitRecord:
    provider: str
    worker: str
    channel: str
    state: str
    consecutive_failures: int
    opened_at: datetime | None
    updated_at: datetime


async def save(conn: Connection, record: CircuitRecord) -> None:
    values = {name: getattr(record, name) for name in CircuitRecord.__dataclass_fields__}
    changing = [k for k in values if k not in ("provider", "worker")]
    await upsert(conn, provider_circuits, [values], update=changing)


async def list_all(conn: Connection) -> list[CircuitRecord]:
    rows = await conn.execute(
        sa.select(provider_circuits).order_by(
            provider_circuits.c.provider, provider_circuits.c.worker
        )
    )
    return [
        CircuitRecord(
            r.provider,
            r.worker,
            r.channel,
            r.state,
            r.consecutive_failures,
            r.opened_at,
            r.updated_at,
        )
        for r in rows
    ]


async def forget_worker(conn: Connection, worker: str) -> None:
    """A worker that stops cleanly takes its rows along."""
    await conn.execute(sa.delete(provider_circuits).where(provider_circuits.c.worker == worker))
