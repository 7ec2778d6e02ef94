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
    rate_limit_waits: int = 0  # stored by the worker's sampler (save_waits), not by save
    rate_limit_wait_seconds: float = 0.0


_WAITS = ("rate_limit_waits", "rate_limit_wait_seconds")
PC = provider_circuits.c


async def save(conn: Connection, record: CircuitRecord) -> None:
    """The circuit's state (its waits are save_waits')."""
    values = {
        name: getattr(record, name)
        for name in CircuitRecord.__dataclass_fields__
        if name not in _WAITS
    }
    changing = [k for k in values if k not in ("provider", "worker")]
    await upsert(conn, provider_circuits, [values], update=changing)


async def save_waits(conn: Connection, worker: str, waits: dict[str, tuple[int, float]]) -> None:
    """``worker``'s rate-limit waits so far, per provider: (sends that waited, seconds), on
    its circuits' rows (a provider without one is left out)."""
    for provider, (count, seconds) in sorted(waits.items()):
        await conn.execute(
            sa.update(provider_circuits)
            .where(PC.provider == provider, PC.worker == worker)
            .values(rate_limit_waits=count, rate_limit_wait_seconds=seconds)
        )


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
            r.rate_limit_waits,
            r.rate_limit_wait_seconds,
        )
        for r in rows
    ]


async def forget_worker(conn: Connection, worker: str) -> None:
    """A worker that stops cleanly takes its rows along."""
    await conn.execute(sa.delete(provider_circuits).where(provider_circuits.c.worker == worker))
