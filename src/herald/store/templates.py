"""Templates: every version kept, the newest used unless a version is named."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from herald.store.database import Connection
from herald.store.tables import templates

T = templates.c


@dataclass(frozen=True, slots=True)
class TemplateRecord:
    name: str
    version: int
    category: str | None
    description: str | None
    channels: dict[str, dict[str, dict[str, str]]]  # channel -> locale -> field -> source
    created_at: datetime


def _record(row: sa.Row[tuple[object, ...]]) -> TemplateRecord:
    m = row._mapping
    return TemplateRecord(
        m["name"], m["version"], m["category"], m["description"], m["channels"], m["created_at"]
    )


async def add_version(
    conn: Connection,
    tenant: str,
    name: str,
    *,
    category: str | None,
    description: str | None,
    channels: dict[str, Any],
    now: datetime,
) -> TemplateRecord:
    """Store a new version (1 for a new name). Concurrent writers of one name collide on the
    primary key; the API turns that into 409 rather than losing either."""
    latest = await conn.scalar(
        sa.select(sa.func.max(T.version)).where(T.tenant_id == tenant, T.name == name)
    )
    record = TemplateRecord(name, (latest or 0) + 1, category, description, channels, now)
    await conn.execute(
        sa.insert(templates).values(
            tenant_id=tenant,
            name=record.name,
            version=record.version,
            category=record.category,
            description=record.description,
            channels=record.channels,
            created_at=record.created_at,
        )
    )
    return record


async def get(
    conn: Connection, tenant: str, name: str, version: int | None = None
) -> TemplateRecord | None:
    query = sa.select(templates).where(T.tenant_id == tenant, T.name == name)
    query = (
        query.order_by(T.version.desc()).limit(1)
        if version is None
        else query.where(T.version == version)
    )
    row = (await conn.execute(query)).first()
    return None if row is None else _record(row)


async def versions(conn: Connection, tenant: str, name: str) -> list[TemplateRecord]:
    rows = await conn.execute(
        sa.select(templates).where(T.tenant_id == tenant, T.name == name).order_by(T.version)
    )
    return [_record(r) for r in rows]


async def latest_all(
    conn: Connection, tenant: str, *, limit: int, after: str | None
) -> list[TemplateRecord]:
    """The newest version of each template, by name."""
    newest = (
        sa.select(T.name, sa.func.max(T.version).label("version"))
        .where(T.tenant_id == tenant)
        .group_by(T.name)
        .subquery()
    )
    query = (
        sa.select(templates)
        .join(newest, sa.and_(T.name == newest.c.name, T.version == newest.c.version))
        .where(T.tenant_id == tenant)
        .order_by(T.name)
        .limit(limit)
    )
    if after is not None:
        query = query.where(T.name > after)
    return [_record(r) for r in await conn.execute(query)]


async def delete(conn: Connection, tenant: str, name: str) -> int:
    result = await conn.execute(sa.delete(templates).where(T.tenant_id == tenant, T.name == name))
    return int(result.rowcount)
