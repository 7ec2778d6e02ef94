"""Rules: what an event of a type triggers, stored by name."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

import sqlalchemy as sa

from herald.store.database import Connection
from herald.store.dialect import upsert
from herald.store.tables import rules

R = rules.c


@dataclass(frozen=True, slots=True)
class RuleRecord:
    name: str
    event_type: str
    condition: str | None
    channels: list[str]
    template: str
    category: str | None
    priority: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime


def _record(row: sa.Row[tuple[object, ...]]) -> RuleRecord:
    m = row._mapping
    return RuleRecord(
        name=m["name"],
        event_type=m["event_type"],
        condition=m["condition"],
        channels=list(m["channels"]),
        template=m["template"],
        category=m["category"],
        priority=m["priority"],
        enabled=bool(m["enabled"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


async def put(conn: Connection, tenant: str, rule: RuleRecord) -> tuple[RuleRecord, bool]:
    """Create or replace by name; True if it was created."""
    existing = await get(conn, tenant, rule.name)
    values = {
        "event_type": rule.event_type,
        "condition": rule.condition,
        "channels": rule.channels,
        "template": rule.template,
        "category": rule.category,
        "priority": rule.priority,
        "enabled": rule.enabled,
        "updated_at": rule.updated_at,
    }
    # An upsert: two API processes loading the rules file at once must not collide.
    await upsert(
        conn,
        rules,
        [{"tenant_id": tenant, "name": rule.name, "created_at": rule.created_at, **values}],
        update=list(values),
    )
    if existing is None:
        return rule, True
    return replace(rule, created_at=existing.created_at), False


async def get(conn: Connection, tenant: str, name: str) -> RuleRecord | None:
    row = (
        await conn.execute(sa.select(rules).where(R.tenant_id == tenant, R.name == name))
    ).first()
    return None if row is None else _record(row)


async def for_event(conn: Connection, tenant: str, event_type: str) -> list[RuleRecord]:
    """Enabled rules of an event type, oldest first: the order their channels are merged in."""
    rows = await conn.execute(
        sa.select(rules)
        .where(R.tenant_id == tenant, R.event_type == event_type, R.enabled.is_(True))
        .order_by(R.created_at, R.name)
    )
    return [_record(r) for r in rows]


async def list_all(
    conn: Connection, tenant: str, event_type: str | None = None
) -> list[RuleRecord]:
    query = sa.select(rules).where(R.tenant_id == tenant).order_by(R.name)
    if event_type is not None:
        query = query.where(R.event_type == event_type)
    return [_record(r) for r in await conn.execute(query)]


async def delete(conn: Connection, tenant: str, name: str) -> bool:
    result = await conn.execute(sa.delete(rules).where(R.tenant_id == tenant, R.name == name))
    return bool(result.rowcount)
