"""Dead letters: rows in, records out, filtered lists, and the replay bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from herald.store.database import Connection
from herald.store.tables import dead_letters, notifications
from herald.tenancy import DEFAULT_TENANT

L = dead_letters.c

DEAD, REPLAYED = "DEAD", "REPLAYED"
#: The kind of a status event that could not be posted to its webhook subscription.
STATUS_WEBHOOK = "status_webhook"
KINDS = ("delivery", "message", "event", STATUS_WEBHOOK)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    kind: str
    status: str
    reason: str
    error_class: str
    error: str
    channel: str | None
    provider: str | None
    notification_id: str | None
    delivery_id: str | None
    topic: str
    key: str | None
    source: str | None
    payload: bytes
    headers: dict[str, str]
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    replay_count: int
    replayed_at: datetime | None


@dataclass(frozen=True, slots=True)
class Filters:
    status: str | None = DEAD
    kind: str | None = None
    reason: str | None = None
    channel: str | None = None
    provider: str | None = None
    error_class: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    tenant: str | None = None  # None: every tenant's (the operator's CLI)

    def where(self) -> list[sa.ColumnElement[bool]]:
        conditions: list[sa.ColumnElement[bool]] = []
        for column, value in (
            (L.tenant_id, self.tenant),
            (L.status, self.status),
            (L.kind, self.kind),
            (L.reason, self.reason),
            (L.channel, self.channel),
            (L.provider, self.provider),
            (L.error_class, self.error_class),
        ):
            if value is not None:
                conditions.append(column == value)
        if self.since is not None:
            conditions.append(L.last_failed_at >= self.since)
        if self.until is not None:
            conditions.append(L.last_failed_at < self.until)
        return conditions


def _record(row: Any) -> DeadLetter:
    m = row._mapping
    return DeadLetter(**{name: m[name] for name in DeadLetter.__dataclass_fields__})


async def insert(conn: Connection, letter: DeadLetter) -> None:
    values: dict[str, Any] = {
        name: getattr(letter, name) for name in DeadLetter.__dataclass_fields__
    }
    # The notification's tenant owns it; what names no notification is the operator's.
    values["tenant_id"] = (
        DEFAULT_TENANT
        if letter.notification_id is None
        else sa.func.coalesce(
            sa.select(notifications.c.tenant_id)
            .where(notifications.c.id == letter.notification_id)
            .scalar_subquery(),
            DEFAULT_TENANT,
        )
    )
    await conn.execute(sa.insert(dead_letters).values(**values))


async def get(
    conn: Connection, letter_id: str, *, lock: bool = False, tenant: str | None = None
) -> DeadLetter | None:
    """``tenant``: only if it is that tenant's (None: anyone's, for the operator)."""
    query = sa.select(dead_letters).where(L.id == letter_id)
    if tenant is not None:
        query = query.where(L.tenant_id == tenant)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()  # concurrent replays of one letter take turns
    row = (await conn.execute(query)).first()
    return None if row is None else _record(row)


async def list_page(
    conn: Connection,
    filters: Filters,
    *,
    limit: int,
    before_id: str | None = None,
    oldest_first: bool = False,
) -> list[DeadLetter]:
    """Newest first (or oldest first); ``before_id`` continues after a previous page."""
    order = L.id.asc() if oldest_first else L.id.desc()
    query = sa.select(dead_letters).where(*filters.where()).order_by(order).limit(limit)
    if before_id is not None:
        query = query.where(L.id < before_id)
    return [_record(r) for r in await conn.execute(query)]


async def count(conn: Connection, filters: Filters) -> int:
    query = sa.select(sa.func.count()).select_from(dead_letters).where(*filters.where())
    return int(await conn.scalar(query) or 0)


async def of_notification(conn: Connection, notification_id: str) -> list[DeadLetter]:
    rows = await conn.execute(
        sa.select(dead_letters).where(L.notification_id == notification_id).order_by(L.id)
    )
    return [_record(r) for r in rows]


async def depth(conn: Connection) -> dict[tuple[str, str], int]:
    """Dead letters not yet replayed, by (kind, channel); channel "" when there is none."""
    rows = await conn.execute(
        sa.select(L.kind, L.channel, sa.func.count())
        .where(L.status == DEAD)
        .group_by(L.kind, L.channel)
    )
    return {(kind, channel or ""): n for kind, channel, n in rows}


async def mark_replayed(conn: Connection, letter_id: str, now: datetime) -> None:
    await conn.execute(
        sa.update(dead_letters)
        .where(L.id == letter_id)
        .values(status=REPLAYED, replayed_at=now, replay_count=L.replay_count + 1)
    )


async def purge_ids(conn: Connection, ids: list[str]) -> int:
    result = await conn.execute(sa.delete(dead_letters).where(L.id.in_(ids)))
    return result.rowcount or 0


async def purge(conn: Connection, filters: Filters) -> int:
    result = await conn.execute(sa.delete(dead_letters).where(*filters.where()))
    return result.rowcount or 0
