"""The console's overview, read from the store: per minute, how many notifications a tenant
accepted and what became of their deliveries; how long the sent ones took to send.

A time window is a range of notification ids (UUIDv7 sort by creation), which the
(tenant_id, id) index serves; the counts are grouped by the database, minute by minute."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from herald.domain.states import NOT_REACHED, REACHED
from herald.ids import first_uuid7_at
from herald.store.database import Connection
from herald.store.tables import deliveries, notifications

N, D = notifications.c, deliveries.c
SENT = {s.value for s in REACHED}
FAILED = {s.value for s in NOT_REACHED}
LATENCY_SAMPLE = 2000  # sent deliveries, the newest, behind the latency figures


@dataclass
class Minute:
    start: str  # "YYYY-MM-DD HH:MM", UTC
    accepted: int = 0
    sent: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Latency:
    """Acceptance to sending, over the newest sent deliveries of the window (seconds), not
    counting scheduled notifications (quiet hours, which defer on purpose too, do count)."""

    count: int
    p50: float
    p95: float
    worst: float


async def minutes(conn: Connection, tenant: str, *, now: datetime, count: int) -> list[Minute]:
    """The last ``count`` minutes up to ``now``, oldest first; sent and failed count the
    deliveries of the notifications accepted that minute (skipped ones in neither)."""
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=count - 1)
    shown = {m: Minute(m) for m in (_label(start + timedelta(minutes=i)) for i in range(count))}
    minute = _minute(N.created_at, conn.dialect.name)
    window = sa.and_(N.tenant_id == tenant, N.id >= first_uuid7_at(start))
    accepted = sa.select(minute, sa.func.count()).where(window).group_by(minute)
    for label, n in await conn.execute(accepted):
        if label in shown:
            shown[label].accepted = n
    outcomes = (
        sa.select(minute, D.status, sa.func.count())
        .join(deliveries, D.notification_id == N.id)
        .where(window, D.status.in_(SENT | FAILED))
        .group_by(minute, D.status)
    )
    for label, status, n in await conn.execute(outcomes):
        if label in shown:
            if status in SENT:
                shown[label].sent += n
            else:
                shown[label].failed += n
    return list(shown.values())


async def latency(conn: Connection, tenant: str, *, since: datetime) -> Latency | None:
    rows = await conn.execute(
        sa.select(N.created_at, D.sent_at)
        .join(deliveries, D.notification_id == N.id)
        .where(
            N.tenant_id == tenant,
            N.id >= first_uuid7_at(since),
            N.send_at.is_(None),  # a scheduled one waits on purpose: not latency
            D.sent_at.is_not(None),
        )
        .order_by(N.id.desc())
        .limit(LATENCY_SAMPLE)
    )
    took = sorted(max((sent - accepted).total_seconds(), 0.0) for accepted, sent in rows)
    if not took:
        return None
    return Latency(len(took), _at(took, 0.50), _at(took, 0.95), took[-1])


def _at(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _label(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def _minute(column: Any, dialect: str) -> Any:
    """The minute of a stored time, as "YYYY-MM-DD HH:MM" (UTC)."""
    if dialect == "sqlite":  # stored as text, "YYYY-MM-DD HH:MM:SS.ffffff", in UTC
        return sa.func.substr(column, 1, 16)
    utc = sa.func.timezone("UTC", column)
    return sa.func.to_char(sa.func.date_trunc("minute", utc), "YYYY-MM-DD HH24:MI")
