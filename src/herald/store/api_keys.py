"""API keys: created with a random secret that is shown once; only its SHA-256 is kept.

A key is 256 random bits, so a fast hash is enough: nobody can search that space, and a
lookup by hash costs one index probe per request (a slow password hash would cost far more).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from herald.ids import uuid7
from herald.store.database import Connection
from herald.store.tables import api_keys

K = api_keys.c
KEY_PREFIX = "hk_"
SCOPES = ("send", "read", "admin")


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    tenant_id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _record(row: sa.Row[tuple[object, ...]]) -> ApiKey:
    m = row._mapping
    return ApiKey(**{name: m[name] for name in ApiKey.__dataclass_fields__})


async def create(
    conn: Connection,
    tenant: str,
    name: str,
    scopes: list[str],
    *,
    now: datetime,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its secret (the only time the secret exists outside the caller)."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        id=uuid7(),
        tenant_id=tenant,
        name=name,
        prefix=secret[:10],
        scopes=sorted(set(scopes)),
        created_at=now,
        expires_at=expires_at,
        revoked_at=None,
        last_used_at=None,
    )
    values = {name: getattr(record, name) for name in ApiKey.__dataclass_fields__}
    await conn.execute(sa.insert(api_keys).values(key_hash=hash_key(secret), **values))
    return record, secret


async def by_hash(conn: Connection, key_hash: str) -> ApiKey | None:
    """The key whose secret hashes (``hash_key``) to ``key_hash``."""
    row = (await conn.execute(sa.select(api_keys).where(K.key_hash == key_hash))).first()
    return None if row is None else _record(row)


async def get(conn: Connection, key_id: str, *, tenant: str | None) -> ApiKey | None:
    """``tenant``: only if it is that tenant's key (None: any, for the operator's CLI)."""
    query = sa.select(api_keys).where(K.id == key_id)
    if tenant is not None:
        query = query.where(K.tenant_id == tenant)
    row = (await conn.execute(query)).first()
    return None if row is None else _record(row)


async def list_all(conn: Connection, *, tenant: str | None) -> list[ApiKey]:
    query = sa.select(api_keys).order_by(K.id)
    if tenant is not None:
        query = query.where(K.tenant_id == tenant)
    return [_record(r) for r in await conn.execute(query)]


async def revoke(conn: Connection, key_id: str, *, tenant: str | None, now: datetime) -> bool:
    """True if it was found (revoking twice keeps the first time)."""
    found = await get(conn, key_id, tenant=tenant)
    if found is None:
        return False
    if found.revoked_at is None:
        await conn.execute(sa.update(api_keys).where(K.id == key_id).values(revoked_at=now))
    return True


async def touch(conn: Connection, key_id: str, now: datetime) -> None:
    await conn.execute(sa.update(api_keys).where(K.id == key_id).values(last_used_at=now))


async def exist(conn: Connection) -> bool:
    """Whether any key was ever created (then `herald serve` requires keys by default)."""
    count: int = await conn.scalar(sa.select(sa.func.count()).select_from(api_keys))
    return count != 0
