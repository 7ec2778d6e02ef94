"""The outbox relay: moves committed outbox events onto the bus, oldest first.

On the embedded bus the relay appends to the log and marks the events published in the same
transaction, so each event is published exactly once. Only one relay works at a time (SQLite's
write lock, or an advisory lock on PostgreSQL), which keeps each key's events in order.

When a batch fails, the relay publishes its events one by one: an event the bus keeps refusing
is marked FAILED and retried later with backoff (DEAD_LETTERED after ``max_attempts``) instead
of holding back every event behind it. If even that bookkeeping fails, the database itself is
unwell and the whole relay backs off.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.bus.base import Bus
from herald.clock import utcnow
from herald.observability.logging import get_logger
from herald.reliability.backoff import Backoff
from herald.store import outbox
from herald.store.database import Database
from herald.store.outbox import OutboxEvent
from herald.wakeup import Wakeup, sleep_unless, wait_for_event

log = get_logger(__name__)

_PG_RELAY_LOCK = 0x72_65_6C_61_79  # any constant shared by every relay
_RELAY_BACKOFF = Backoff(base=0.5, cap=30.0)  # the relay as a whole (database trouble)
_EVENT_BACKOFF = Backoff(base=1.0, cap=300.0)  # one event the bus refuses


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        bus: Bus,
        wakeup: Wakeup,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.2,
        max_attempts: int = 10,
        event_backoff: Backoff = _EVENT_BACKOFF,
    ) -> None:
        if not bus.transactional:
            raise NotImplementedError(f"the outbox relay does not support the {bus.name} bus yet")
        self.db = db
        self.bus = bus
        self.wakeup = wakeup
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self.event_backoff = event_backoff

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
                    await sleep_unless(stop, _RELAY_BACKOFF.ceiling(failures))
                    continue
                if published < self.batch_size:
                    await wait_for_event(woken, self.poll_interval)
        finally:
            self.wakeup.unsubscribe(woken)

    async def relay_once(self) -> int:
        """Publish the due events, at most one batch; returns how many were handled."""
        try:
            return await self._publish_batch()
        except Exception as exc:
            log.warning("relay.batch_failed", error=f"{type(exc).__name__}: {exc}")
        return await self._publish_one_by_one()

    async def _locked(self, conn: AsyncConnection) -> None:
        if not self.db.is_sqlite:
            await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_PG_RELAY_LOCK})"))

    async def _publish_batch(self) -> int:
        now = utcnow()
        async with self.db.write() as conn:
            await self._locked(conn)
            events = await outbox.due(conn, now=now, limit=self.batch_size)
            if events:
                await self._publish(conn, events, now)
        if events:
            self._published(events)
        return len(events)

    async def _publish_one_by_one(self) -> int:
        now = utcnow()
        async with self.db.read() as conn:
            events = await outbox.due(conn, now=now, limit=self.batch_size)
        for event in events:
            try:
                async with self.db.write() as conn:
                    await self._locked(conn)
                    await self._publish(conn, [event], now)
                self._published([event])
            except Exception as exc:
                await self._record_failure(event, exc, now)
        return len(events)

    async def _publish(
        self, conn: AsyncConnection, events: list[OutboxEvent], now: datetime
    ) -> None:
        await self.bus.publish_in(conn, [e.message() for e in events])
        await outbox.mark_published(conn, [e.id for e in events], now)

    def _published(self, events: list[OutboxEvent]) -> None:
        self.bus.after_commit({e.topic for e in events})
        log.debug("relay.published", count=len(events))

    async def _record_failure(self, event: OutboxEvent, exc: Exception, now: datetime) -> None:
        attempts = event.attempts + 1
        dead = attempts >= self.max_attempts
        retry_at = now + timedelta(seconds=self.event_backoff.delay(attempts))
        error = f"{type(exc).__name__}: {exc}"
        async with self.db.write() as conn:
            await outbox.record_failure(
                conn, event.id, attempts=attempts, error=error, retry_at=retry_at, dead=dead
            )
        log_event = log.error if dead else log.warning
        log_event(
            "relay.event_dead_lettered" if dead else "relay.event_failed",
            event_id=event.id,
            topic=event.topic,
            attempts=attempts,
            error=error,
        )
