"""Console sessions: found by their token only while neither they nor their key have expired
or been revoked; a session never outlives its key."""

from __future__ import annotations

from datetime import timedelta

from herald.clock import utcnow
from herald.store import api_keys, console_sessions
from herald.store.database import Database


async def test_a_session_lives_as_long_as_it_and_its_key_do(db: Database) -> None:
    now = utcnow()
    hour = timedelta(hours=1)
    async with db.write() as conn:
        key, _ = await api_keys.create(conn, "acme", "ops", ["read"], now=now)
        short, _ = await api_keys.create(
            conn, "acme", "brief", ["read"], now=now, expires_at=now + hour
        )
        token = await console_sessions.start(conn, key, now=now, lifetime=8 * hour)
        capped = await console_sessions.start(conn, short, now=now, lifetime=8 * hour)
        ended = await console_sessions.start(conn, key, now=now, lifetime=8 * hour)
        await console_sessions.end(conn, ended)
    async with db.read() as conn:
        found = await console_sessions.find(conn, token, now=now)
        assert found is not None
        assert found.key.id == key.id
        assert found.expires_at == now + 8 * hour
        assert len(found.csrf_token) >= 40
        assert await console_sessions.find(conn, token, now=now + 9 * hour) is None
        assert await console_sessions.find(conn, "not-a-token", now=now) is None
        assert await console_sessions.find(conn, ended, now=now) is None
        brief = await console_sessions.find(conn, capped, now=now)
        assert brief is not None
        assert brief.expires_at == now + hour  # not past its key's expiry
    async with db.write() as conn:
        await api_keys.revoke(conn, key.id, tenant=None, now=now)
    async with db.read() as conn:
        assert await console_sessions.find(conn, token, now=now) is None  # revoked with its key
