"""The notification journal: steps no other table records, kept for the timeline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from herald.store.bulk_insert import insert_rows
from herald.store.database import Connection
from herald.store.tables import notification_events

J = notification_events.c

# Steps written here; the timeline adds those it reads from other tables.
PUBLISHED, ROUTED, REPLAYED = "published", "routed", "replayed"
SKIPPED, DEFERRED, SUPERSEDED = "skipped", "deferred", "superseded"
CANCELLED = "cancelled"
ADDRESS_REMOVED = "address_removed"  # a push token or subscription the provider says is gone


@dataclass(frozen=True, slots=True)
class Step:
    notification_id: str
    step: str
    at: datetime
    delivery_id: str | None = None
    channel: str | None = None
    detail: str | None = None


async def record(conn: Connection, steps: list[Step]) -> None:
    if steps:
        await insert_rows(conn, notification_events, rows(steps))


def rows(steps: list[Step]) -> list[dict[str, Any]]:
    fields = Step.__dataclass_fields__
    return [{f: getattr(s, f) for f in fields} for s in steps]


async def steps_of(conn: Connection, notification_id: str) -> list[Step]:
    rows = await conn.execute(
        sa.select(notification_events).where(J.notification_id == notification_id).order_by(J.id)
    )
    return [Step(r.notification_id, r.step, r.at, r.delivery_id, r.channel, r.detail) for r in rows]
