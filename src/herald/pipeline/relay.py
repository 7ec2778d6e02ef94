"""The outbox relay: moves committed outbox events onto the bus, oldest first.

On the embedded bus the relay appends to the log and marks the events published in the same
transaction, so each event is published exactly once. Only one relay works at a time (SQLite's
write lock, or an advisory lock on PostgreSQL), which keeps each key's events in order.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from herald.bus.base import Bus
from herald.clock import utcnow
from herald.observability.logging import get_logger
from herald.reliability.backoff import Backoff
from herald.store import outbox
from herald.store.database import Database
from herald.wakeup import Wakeup, sleep_unless, wait_for_event

log = get_logger(__name__)

_PG_RELAY_LOCK = 0x72_65_6C_61_79  # any constant shared by every relay
_BACKOFF = Backoff(base=0.5, cap=30.0)


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        bus: Bus,
        wakeup: Wakeup,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.2,
        backoff: Backoff = _BACKOFF,
    ) -> None:
        if not bus.transactional:
            raise NotImplementedError(f"the outbox relay does not support the {bus.name} bus yet")
        self.db = db
        self.bus = bus
        self.wakeup = wakeup
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.backoff = backoff

    async def run(self, stop: asyncio.Event) -> None:
        woken = self.wakeup.subscribe()
        failures = 0
        try:
            while not stop.is_set():
                try:
                    published = await self.relay_once()
                    failures = 0
                except Exception:
                    failures += 1
                    log.exception("relay.failed", failures=failures)
                    await sleep_unless(stop, self.backoff.ceiling(failures))
                    continue
                if published < self.batch_size:
                    await wait_for_event(woken, self.poll_interval)
        finally:
            self.wakeup.unsubscribe(woken)

    async def relay_once(self) -> int:
        """Publish one batch of due events; returns how many."""
        now = utcnow()
        async with self.db.write() as conn:
            if not self.db.is_sqlite:
                await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_PG_RELAY_LOCK})"))
            events = await outbox.due(conn, now=now, limit=self.batch_size)
            if events:
                await self.bus.publish_in(conn, [e.message() for e in events])
                await outbox.mark_published(conn, [e.id for e in events], now)
        if events:
            self.bus.after_commit({e.topic for e in events})
            log.debug("relay.published", count=len(events))
        return len(events)
