"""A tenant's status webhook subscriptions: a URL and the status events it wants."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from herald.store.database import Connection
from herald.store.tables import webhook_subscriptions

S = webhook_subscriptions.c

#: Subscriptions a tenant may have: every status event is posted to each one that wants it.
MAX_PER_TENANT = 20


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    tenant_id: str
    url: str
    events: tuple[str, ...]
    description: str | None
    created_at: datetime


def _subscription(row: sa.Row[Any]) -> Subscription:
    return Subscription(
        row.id, row.tenant_id, row.url, tuple(row.events), row.description, row.created_at
    )


async def add(conn: Connection, subscription: Subscription) -> None:
    await conn.execute(
        sa.insert(webhook_subscriptions).values(
            id=subscription.id,
            tenant_id=subscription.tenant_id,
            url=subscription.url,
            events=list(subscription.events),
            description=subscription.description,
            created_at=subscription.created_at,
        )
    )


async def of_tenant(conn: Connection, tenant: str) -> list[Subscription]:
    rows = await conn.execute(
        sa.select(webhook_subscriptions).where(S.tenant_id == tenant).order_by(S.id)
    )
    return [_subscription(r) for r in rows]


async def get(conn: Connection, tenant: str, subscription_id: str) -> Subscription | None:
    row = (
        await conn.execute(
            sa.select(webhook_subscriptions).where(S.tenant_id == tenant, S.id == subscription_id)
        )
    ).first()
    return None if row is None else _subscription(row)


async def remove(conn: Connection, tenant: str, subscription_id: str) -> bool:
    result = await conn.execute(
        sa.delete(webhook_subscriptions).where(S.tenant_id == tenant, S.id == subscription_id)
    )
    return bool(result.rowcount)


async def every(conn: Connection) -> list[Subscription]:
    """Every tenant's (a small table: the pipeline keeps it in memory, see status_webhooks)."""
    rows = await conn.execute(sa.select(webhook_subscriptions).order_by(S.id))
    return [_subscription(r) for r in rows]
