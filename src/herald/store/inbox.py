"""The in-app inbox: items written by the in-app channel, read and marked by the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from herald.store.database import Connection
from herald.store.dialect import insert_if_absent
from herald.store.tables import inbox_items

I = inbox_items.c  # noqa: E741

ItemStatus = Literal["unread", "read", "archived"]


@dataclass(frozen=True, slots=True)
class InboxItem:
    id: str
    tenant_id: str
    user_id: str
    notification_id: str
    category: str | None
    title: str | None
    body: str
    data: dict[str, Any]
    status: str
    created_at: datetime
    read_at: datetime | None


def stream_key(tenant: str, user_id: str) -> str:
    """What an inbox's live stream waits on (user ids repeat across tenants)."""
    return f"{tenant}/{user_id}"


def _item(row: sa.Row[tuple[object, ...]]) -> InboxItem:
    m = row._mapping
    return InboxItem(**{name: m[name] for name in InboxItem.__dataclass_fields__})


async def add(conn: Connection, item: InboxItem) -> bool:
    """Store an item; False if it is already there (a resent delivery adds nothing)."""
    values = {name: getattr(item, name) for name in InboxItem.__dataclass_fields__}
    return await insert_if_absent(conn, inbox_items, values)


async def page(
    conn: Connection,
    tenant: str,
    user_id: str,
    *,
    limit: int,
    before_id: str | None = None,
    after_id: str | None = None,
    status: str | None = None,
    include_archived: bool = False,
) -> list[InboxItem]:
    """Newest first; ``after_id`` (oldest first) is what a stream reads to catch up."""
    query = sa.select(inbox_items).where(I.tenant_id == tenant, I.user_id == user_id).limit(limit)
    if status is not None:
        query = query.where(I.status == status)
    elif not include_archived:
        query = query.where(I.status != "archived")
    if after_id is not None:
        query = query.where(I.id > after_id).order_by(I.id)
    else:
        query = query.order_by(I.id.desc())
        if before_id is not None:
            query = query.where(I.id < before_id)
    return [_item(r) for r in await conn.execute(query)]


async def unread_count(conn: Connection, tenant: str, user_id: str) -> int:
    count = await conn.scalar(
        sa.select(sa.func.count()).where(
            I.tenant_id == tenant, I.user_id == user_id, I.status == "unread"
        )
    )
    return int(count or 0)


async def newest_id(conn: Connection, tenant: str, user_id: str) -> str | None:
    found: str | None = await conn.scalar(
        sa.select(sa.func.max(I.id)).where(I.tenant_id == tenant, I.user_id == user_id)
    )
    return found


async def mark(
    conn: Connection,
    tenant: str,
    user_id: str,
    item_ids: list[str],
    status: ItemStatus,
    now: datetime,
) -> int:
    values: dict[str, Any] = {"status": status}
    if status == "read":
        values["read_at"] = now
    elif status == "unread":
        values["read_at"] = None
    result = await conn.execute(
        sa.update(inbox_items)
        .where(I.tenant_id == tenant, I.user_id == user_id, I.id.in_(item_ids))
        .values(**values)
    )
    return int(result.rowcount)


async def mark_all_read(conn: Connection, tenant: str, user_id: str, now: datetime) -> int:
    result = await conn.execute(
        sa.update(inbox_items)
        .where(I.tenant_id == tenant, I.user_id == user_id, I.status == "unread")
        .values(status="read", read_at=now)
    )
    return int(result.rowcount)


async def delete_all(conn: Connection, tenant: str, user_id: str) -> int:
    """Every item of the user's inbox: its user is deleted (a new user given the same id
    must start with an empty inbox)."""
    result = await conn.execute(
        sa.delete(inbox_items).where(I.tenant_id == tenant, I.user_id == user_id)
    )
    return int(result.rowcount)
