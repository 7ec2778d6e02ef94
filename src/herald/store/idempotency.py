"""Stored responses for Idempotency-Key requests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.store.tables import idempotency_keys

K = idempotency_keys.c


@dataclass(frozen=True, slots=True)
class StoredResponse:
    request_hash: str
    resource_id: str
    status: int
    body: dict[str, Any]


async def find(conn: AsyncConnection, scope: str, key: str, now: datetime) -> StoredResponse | None:
    """The live response stored under the key; an expired one is deleted and ignored."""
    row = (
        await conn.execute(sa.select(idempotency_keys).where(K.scope == scope, K.key == key))
    ).first()
    if row is None:
        return None
    if row.expires_at <= now:
        await conn.execute(sa.delete(idempotency_keys).where(K.scope == scope, K.key == key))
        return None
    return StoredResponse(row.request_hash, row.resource_id, row.response_status, row.response_body)


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
    conn: AsyncConnection,
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


async def purge_expired(conn: AsyncConnection, now: datetime) -> int:
    result = await conn.execute(sa.delete(idempotency_keys).where(K.expires_at <= now))
    return result.rowcount or 0
