"""Stored responses for Idempotency-Key requests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from herald.store.database import Connection, Database
from herald.store.one_of import one_of
from herald.store.purge import delete_in_chunks
from herald.store.tables import idempotency_keys

K = idempotency_keys.c


@dataclass(frozen=True, slots=True)
class StoredResponse:
    request_hash: str
    resource_id: str
    status: int
    body: dict[str, Any]


_FIND = sa.select(idempotency_keys).where(K.scope == sa.bindparam("scope"), one_of(K.key, "keys"))
_FORGET = sa.delete(idempotency_keys).where(
    K.scope == sa.bindparam("scope"),
    one_of(K.key, "keys"),
    K.expires_at <= sa.bindparam("now", type_=K.expires_at.type),
)


async def find_many(
    conn: Connection, scope: str, keys: list[str], now: datetime
) -> tuple[dict[str, tuple[StoredResponse, datetime]], list[str]]:
    """The live responses stored under these keys of one scope, each with when it expires, in
    one statement; and the keys whose response has expired (to be forgotten: a new request
    may use them again)."""
    found: dict[str, tuple[StoredResponse, datetime]] = {}
    expired: list[str] = []
    for row in await conn.execute(_FIND, {"scope": scope, "keys": keys}):
        if row.expires_at <= now:
            expired.append(row.key)
        else:
            response = StoredResponse(
                row.request_hash, row.resource_id, row.response_status, row.response_body
            )
            found[row.key] = (response, row.expires_at)
    return found, expired


async def forget_expired(conn: Connection, scope: str, keys: list[str], now: datetime) -> None:
    await conn.execute(_FORGET, {"scope": scope, "keys": keys, "now": now})


def row(
    scope: str, key: str, response: StoredResponse, *, now: datetime, ttl_seconds: float
) -> dict[str, Any]:
    """The row that stores ``response`` under the key; inserting it fails with IntegrityError
    (the primary key) when a concurrent duplicate stored one first."""
    return {
        "scope": scope,
        "key": key,
        "request_hash": response.request_hash,
        "resource_id": response.resource_id,
        "response_status": response.status,
        "response_body": response.body,
        "created_at": now,
        "expires_at": now + timedelta(seconds=ttl_seconds),
    }


async def save(
    conn: Connection,
    scope: str,
    key: str,
    response: StoredResponse,
    *,
    now: datetime,
    ttl_seconds: float,
) -> None:
    await conn.execute(
        sa.insert(idempotency_keys), [row(scope, key, response, now=now, ttl_seconds=ttl_seconds)]
    )


async def purge_expired(db: Database, now: datetime) -> int:
    return await delete_in_chunks(db, idempotency_keys, K.expires_at <= now)
