"""Housekeeping removes only what has expired."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from herald.bus.base import OutgoingMessage
from herald.bus.embedded import EmbeddedBus
from herald.clock import utcnow
from herald.domain.models import OutboxStatus
from herald.ids import uuid7
from herald.pipeline.operations.maintenance import Maintenance
from herald.store import (
    api_keys,
    console_sessions,
    idempotency,
    outbox,
    recipient_caps,
    webhook_events,
)
from herald.store.database import Database
from herald.store.idempotency import StoredResponse
from herald.store.tables import (
    bus_messages,
    idempotency_keys,
    outbox_events,
    recipient_sends,
)
from herald.store.tables import console_sessions as console_sessions_table
from herald.store.webhook_events import NewEvent


async def test_expired_keys_old_events_and_old_messages_are_purged(db: Database) -> None:
    bus = EmbeddedBus(db, partitions=1)
    await bus.ensure_topics(["t"])
    now = utcnow()
    response = StoredResponse("h", "id", 202, {})
    async with db.write() as conn:
        await idempotency.save(
            conn, "s", "old", response, now=now - timedelta(days=2), ttl_seconds=60
        )
        await idempotency.save(conn, "s", "live", response, now=now, ttl_seconds=3600)
        await outbox.add(conn, [OutgoingMessage("t", "k", b"old")], now=now - timedelta(hours=3))
        await outbox.add(conn, [OutgoingMessage("t", "k", b"new")], now=now)
        await outbox.add(
            conn, [OutgoingMessage("t", "k", b"waiting")], now=now - timedelta(hours=3)
        )
        ids = (await conn.execute(sa.select(outbox_events.c.id).order_by("id"))).scalars().all()
        await outbox.published(conn, ids[:1], now - timedelta(hours=2), keep=True)
        await outbox.published(conn, ids[1:2], now, keep=True)
        for delivery_id, when in (("yesterday", now - timedelta(days=1)), ("today", now)):
            counted = recipient_caps.Counted("t", "sms", "+14155550100", delivery_id, cap=5)
            assert await recipient_caps.admit_many(conn, [counted], now=when) == set()
        key, _ = await api_keys.create(conn, "t", "console", ["read"], now=now)
        for lifetime in (timedelta(hours=-1), timedelta(hours=1)):  # one expired an hour ago
            await console_sessions.start(conn, key, now=now, lifetime=lifetime)
    await bus.publish([OutgoingMessage("t", "k", b"m")])
    async with db.write() as conn:
        await conn.execute(sa.update(bus_messages).values(created_at=now - timedelta(days=8)))
    await bus.publish([OutgoingMessage("t", "k", b"fresh")])

    housekeeping = Maintenance(
        db, bus, interval=60, outbox_retention=3600, log_retention=7 * 24 * 3600
    )
    counts = await housekeeping.run_once()

    assert counts == {
        "idempotency_keys": 1,
        "outbox_events": 1,
        "log_messages": 1,
        "recipient_counts": 1,  # yesterday's daily-cap count
        "console_sessions": 1,
        "sent_status_events": 0,  # kept unless a retention is given
    }
    async with db.read() as conn:
        keys = (await conn.execute(sa.select(idempotency_keys.c.key))).scalars().all()
        left = (
            await conn.execute(sa.select(outbox_events.c.payload, outbox_events.c.status))
        ).all()
        messages = (await conn.execute(sa.select(bus_messages.c.value))).scalars().all()
        counted = (await conn.execute(sa.select(recipient_sends.c.delivery_id))).scalars().all()
        sessions = (await conn.execute(sa.select(console_sessions_table.c.expires_at))).scalars()
        assert [expiry > now for expiry in sessions] == [True]
    assert keys == ["live"]
    assert counted == ["today"]
    assert sorted(left) == [(b"new", OutboxStatus.PUBLISHED), (b"waiting", OutboxStatus.PENDING)]
    assert messages == [b"fresh"]


async def test_status_events_posted_long_ago_are_purged_and_no_others(db: Database) -> None:
    now = utcnow()
    week_ago = now - timedelta(days=8)
    rows = []
    for name, made, status in [
        ("old-sent", week_ago, webhook_events.SENT),
        ("old-dead", week_ago, webhook_events.DEAD_LETTERED),  # replayable: kept
        ("old-retrying", week_ago, webhook_events.RETRY_PENDING),
        ("new-sent", now, webhook_events.SENT),
    ]:
        event = NewEvent(
            uuid7(int(made.timestamp() * 1000)), "t", "s1", name, "delivery.sent", "{}", None
        )
        rows.append({**event.row(made), "status": status})
    async with db.write() as conn:
        await conn.execute(sa.insert(webhook_events.webhook_events), rows)

    housekeeping = Maintenance(
        db,
        EmbeddedBus(db, partitions=1),
        interval=60,
        outbox_retention=3600,
        log_retention=3600,
        status_event_retention=7 * 24 * 3600,
    )
    counts = await housekeeping.run_once()

    async with db.read() as conn:
        E = webhook_events.webhook_events.c
        left = (await conn.execute(sa.select(E.notification_id))).scalars().all()
    assert counts["sent_status_events"] == 1
    assert sorted(left) == ["new-sent", "old-dead", "old-retrying"]
