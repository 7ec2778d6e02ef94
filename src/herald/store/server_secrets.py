"""Secrets every Herald process shares, kept in the database and made on first use.

Whichever process needs a secret first inserts one (if absent) and every process then reads
the row that won, so API processes on several hosts sign and verify with the same key.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa

from herald.clock import utcnow
from herald.store.database import Connection, Database
from herald.store.dialect import insert_if_absent
from herald.store.tables import server_secrets

S = server_secrets.c
# The key that signs unsubscribe links (domain/unsubscribe).
UNSUBSCRIBE_KEY = "unsubscribe-links"


async def get(conn: Connection, name: str) -> bytes | None:
    value: str | None = await conn.scalar(sa.select(S.value).where(S.name == name))
    return None if value is None else value.encode()


async def get_or_create(db: Database, name: str) -> bytes:
    async with db.read() as conn:
        found = await get(conn, name)
    if found is not None:
        return found
    async with db.write() as conn:
        # Two processes may race here: the first insert wins and both read it back.
        fresh = {"name": name, "value": secrets.token_urlsafe(48), "created_at": utcnow()}
        await insert_if_absent(conn, server_secrets, fresh)
        found = await get(conn, name)
    assert found is not None
    return found


class ServerSecret:
    """One named secret, read (or made) once per process: it never changes once stored."""

    def __init__(self, db: Database, name: str) -> None:
        self.db = db
        self.name = name
        self._value: bytes | None = None

    async def value(self) -> bytes:
        if self._value is None:
            self._value = await get_or_create(self.db, self.name)
        return self._value
