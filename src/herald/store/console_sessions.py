"""Sign-ins to the operator console: a random token in the browser's cookie, its hash here,
bound to the API key it was made with (a revoked or expired key ends the session)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from herald.store import api_keys
from herald.store.api_keys import ApiKey
from herald.store.database import Connection, Database
from herald.store.purge import delete_in_chunks
from herald.store.tables import console_sessions

S = console_sessions.c


@dataclass(frozen=True, slots=True)
class Session:
    key: ApiKey
    csrf_token: str  # every form of the session carries it
    expires_at: datetime


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start(conn: Connection, key: ApiKey, *, now: datetime, lifetime: timedelta) -> str:
    """A new session for ``key``; its token (the cookie's value, stored only hashed)."""
    token = secrets.token_urlsafe(32)
    expires = min(now + lifetime, key.expires_at) if key.expires_at else now + lifetime
    await conn.execute(
        sa.insert(console_sessions).values(
            token_hash=_hash(token),
            key_id=key.id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=expires,
        )
    )
    return token


async def find(conn: Connection, token: str, *, now: datetime) -> Session | None:
    """The live session of ``token``: not expired, its key neither revoked nor expired."""
    row = (
        await conn.execute(
            sa.select(S.key_id, S.csrf_token, S.expires_at).where(S.token_hash == _hash(token))
        )
    ).first()
    if row is None or row.expires_at <= now:
        return None
    key = await api_keys.get(conn, row.key_id, tenant=None)
    if key is None or not key.usable(now):
        return None
    return Session(key, row.csrf_token, row.expires_at)


async def end(conn: Connection, token: str) -> None:
    await conn.execute(sa.delete(console_sessions).where(S.token_hash == _hash(token)))


async def purge_expired(db: Database, now: datetime) -> int:
    """Delete sessions past their expiry (maintenance); how many."""
    return await delete_in_chunks(db, console_sessions, S.expires_at <= now)
