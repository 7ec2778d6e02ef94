"""A tenant's webhook signing secrets: they sign webhooks to URLs given inline in ``contacts``
(registered users have secrets of their own, see herald.store.users).

One row per tenant, the secrets newest first, each with the time it stops being used (None for
the current one), stored as users' are. A tenant gets its secret the first time one is needed;
a rotation adds a new one and keeps the others signing until the grace period ends.

``fallback`` is a secret used, never stored, while a tenant has no row: HERALD_WEBHOOK_SECRET for
the default tenant, so an operator's receivers keep verifying until the first rotation, which
keeps it signing for the grace period and then retires it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from herald.store.database import Connection, Database
from herald.store.dialect import insert_if_absent, lock_until_commit
from herald.store.tables import tenant_webhook_secrets as table
from herald.store.users import new_secret

T = table.c


@dataclass(frozen=True, slots=True)
class TenantSecrets:
    tenant_id: str
    secrets: list[dict[str, Any]]  # {"secret", "expires_at"}, newest first
    created_at: datetime | None  # None: the fallback, not stored
    rotated_at: datetime | None

    def signing_secrets(self, now: datetime) -> list[str]:
        """Secrets still in use, newest first: more than one while a rotation is in its grace."""
        return [s["secret"] for s in self.in_use(now)]

    def grace_ends_at(self, now: datetime) -> datetime | None:
        """When the older secrets still in use stop signing; None when only one is."""
        ends = [datetime.fromisoformat(s["expires_at"]) for s in self.in_use(now)[1:]]
        return max(ends, default=None)

    def in_use(self, now: datetime) -> list[dict[str, Any]]:
        return [
            s
            for s in self.secrets
            if s.get("expires_at") is None or datetime.fromisoformat(s["expires_at"]) > now
        ]


async def get(conn: Connection, tenant: str) -> TenantSecrets | None:
    row = (await conn.execute(sa.select(table).where(T.tenant_id == tenant))).first()
    if row is None:
        return None
    m = row._mapping
    return TenantSecrets(tenant, list(m["secrets"]), m["created_at"], m["rotated_at"])


async def ensure(conn: Connection, tenant: str, *, now: datetime) -> TenantSecrets:
    """The tenant's secrets, a new one made (and stored) if it has none. Safe to race: the
    first insert wins and everyone reads that one."""
    values = {"tenant_id": tenant, "secrets": [_entry(new_secret())], "created_at": now}
    await insert_if_absent(conn, table, values)
    found = await get(conn, tenant)
    assert found is not None
    return found


async def current(
    db: Database, tenant: str, *, now: datetime, fallback: str | None = None
) -> TenantSecrets:
    """What signs the tenant's webhooks: stored, else the fallback, else made now (the only
    time this writes)."""
    async with db.read() as conn:
        found = await get(conn, tenant)
    if found is not None:
        return found
    if fallback is not None:
        return TenantSecrets(tenant, [_entry(fallback)], None, None)
    async with db.write() as conn:
        return await ensure(conn, tenant, now=now)


async def rotate(
    conn: Connection,
    tenant: str,
    *,
    grace: timedelta,
    now: datetime,
    fallback: str | None = None,
) -> str:
    """A new secret, returned once; those in use keep signing until ``grace`` has passed, so
    receivers switch over without dropping a delivery."""
    # Two rotations at once must not each drop the other's new secret.
    await lock_until_commit(conn, f"tenant-webhook-secret:{tenant}")
    first = [] if fallback is None else [_entry(fallback)]
    await insert_if_absent(conn, table, {"tenant_id": tenant, "secrets": first, "created_at": now})
    found = await get(conn, tenant)
    assert found is not None
    ends = (now + grace).isoformat()
    kept = [
        {"secret": s["secret"], "expires_at": min(s["expires_at"] or ends, ends)}
        for s in found.in_use(now)
    ]
    fresh = new_secret()
    await conn.execute(
        sa.update(table)
        .where(T.tenant_id == tenant)
        .values(secrets=[_entry(fresh), *kept], rotated_at=now)
    )
    return fresh


def _entry(secret: str) -> dict[str, Any]:
    return {"secret": secret, "expires_at": None}
