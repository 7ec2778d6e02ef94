"""The outbox relay: moves committed outbox events onto the bus, in order per key.

Two ways, chosen by the bus:
- The embedded bus lives in the same database, so the relay appends to the log and marks the
  events published in one transaction: each event is published exactly once. One relay works
  at a time (SQLite's write lock, or an advisory lock on PostgreSQL).
- An external bus (Kafka) cannot join a transaction, and waiting for its acknowledgement must
  not hold a database lock (a broker outage would stall the API). The outbox is split into
  shards by key; a relay leases some shards that have due events (SELECT ... FOR UPDATE SKIP
  LOCKED on PostgreSQL), publishes their events without a transaction open, then marks them
  published and releases the shards in one transaction. Only the lease holder publishes a
  shard, so each key stays in order while several relays share the work; if a relay dies
  between publishing and marking, its leases lapse and the events are published again.

A relay woken by a commit waits ``linger`` (10 ms by default) before it looks: the commits of
that moment then go out as one batch, in one produce request and one marking transaction,
instead of one round each (in the distributed deployment the relay and the broker each spent
about 15 % less CPU per notification). Under load the wait grows with the batch just handled
(see ``_linger_after``) up to ``linger_max`` (by default four times ``linger``): a busy relay's
batches fill up further, while a lone notification still waits only ``linger``.

When the bus refuses part of a batch, the relay retries event by event: an event the bus
keeps refusing is marked FAILED and retried later with backoff (DEAD_LETTERED after
``max_attempts``) instead of holding back the events behind it. When the bus or the database
cannot be reached at all, nothing is counted against the events; the relay just backs off.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from datetime import timedelta

import sqlalchemy as sa
import sqlalchemy.exc

from herald.bus.base import Bus
from herald.clock import utcnow
from herald.errors import BusUnavailableError
from herald.observability import metrics
from herald.observability.logging import get_logger
from herald.pipeline.deadletter import DeadLetterOffice
from herald.pipeline.unit import Unit, Units, count_published
from herald.reliability.backoff import Backoff
from herald.store import outbox
from herald.store.database import UNAVAILABLE_ERRORS, Database
from herald.store.outbox import OutboxEvent
from herald.wakeup import Wakeup, sleep_unless, wait_for_event

log = get_logger(__name__)

_PG_RELAY_LOCK = 0x72_65_6C_61_79  # any constant shared by every relay
# The relay as a whole (bus or database down): a try costs little, and after an outage the
# backlog should start moving within seconds.
_RELAY_BACKOFF = Backoff(base=0.5, cap=5.0)
_EVENT_BACKOFF = Backoff(base=1.0, cap=300.0)  # one event the bus refuses
# The linger is stretched by one step for every this many events the last batch held, up to
# linger_max: by default this many times the linger.
LINGER_STEP_EVENTS = 8
LINGER_MAX_TIMES = 4

# The bus or the database out of reach (TimeoutError is an OSError): nothing is counted
# against what was being handled. The expander shares it.
UNREACHABLE = (BusUnavailableError, *UNAVAILABLE_ERRORS)


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        bus: Bus,
        wakeup: Wakeup,
        *,
        batch_size: int = 500,
        linger: float = 0.0,
        linger_max: float | None = None,
        poll_interval: float = 0.2,
        max_attempts: int = 10,
        event_backoff: Backoff = _EVENT_BACKOFF,
        dead_letters: DeadLetterOffice | None = None,
        shard_lease_seconds: float = 30.0,
        shards_per_claim: int = 8,
        keep_published: bool = False,
    ) -> None:
        self.db = db
        self.bus = bus
        self.wakeup = wakeup
        self.batch_size = batch_size
        self.linger = linger
        self.linger_max = max(
            linger, LINGER_MAX_TIMES * linger if linger_max is None else linger_max
        )
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self.event_backoff = event_backoff
        self.dead_letters = dead_letters
        # Refusals are recorded, and their dead letters filed, as units of work.
        self.units = dead_letters.units if dead_letters is not None else Units(db, wakeup)
        self.shard_lease_seconds = shard_lease_seconds
        self.shards_per_claim = shards_per_claim
        # Published rows kept (marked) for the retention, or deleted at once: on PostgreSQL the
        # mark was a whole new row version (the payload with it) and an entry in each index,
        # and maintenance's delete later another write: two fifths of PostgreSQL's CPU per
        # notification stored in batches.
        self.keep_published = keep_published
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    async def run(self, stop: asyncio.Event) -> None:
        woken = self.wakeup.subscribe()
        # A stop ends the wait for work at once, not a poll interval later.
        stopping = asyncio.ensure_future(stop.wait())
        stopping.add_done_callback(lambda _: woken.set())
        failures = 0
        try:
            while not stop.is_set():
                try:
                    handled = await self.relay_once()
                    failures = 0
                except Exception as exc:
                    failures += 1
                    event = log.exception if failures == 1 else log.error
                    event("relay.failed", failures=failures, error=f"{type(exc).__name__}: {exc}")
                    await sleep_unless(stop, _RELAY_BACKOFF.ceiling(failures))
                    continue
                if handled < self.batch_size:
                    woke = await wait_for_event(woken, self.poll_interval)
                    if woke and self.linger:
                        await sleep_unless(stop, self._linger_after(handled))
        finally:
            stopping.cancel()
            self.wakeup.unsubscribe(woken)

    def _linger_after(self, handled: int) -> float:
        """How long to wait for more commits after a batch of ``handled`` events: the linger,
        once more for every LINGER_STEP_EVENTS of them, at most ``linger_max``. At a thousand
        notifications a second, 30 ms instead of 10 cost the distributed deployment's relay
        and broker about a quarter less CPU per notification; a quiet relay keeps 10 ms."""
        steps = max(1.0, handled / LINGER_STEP_EVENTS)
        return min(self.linger_max, self.linger * steps)

    async def relay_once(self) -> int:
        """Publish one batch of due events; returns how many were handled."""
        if self.bus.transactional:
            return await self._relay_in_transaction()
        return await self._relay_claimed_shards()

    # -- the embedded bus: publish and mark in one transaction ---------------------------

    async def _relay_in_transaction(self) -> int:
        try:
            return await self._publish_in_transaction(limit=self.batch_size)
        except UNREACHABLE:
            raise
        except Exception as exc:
            log.warning("relay.batch_failed", error=f"{type(exc).__name__}: {exc}")
        # Find the event(s) the bus refuses by publishing one at a time, each at most once.
        async with self.db.read() as conn:
            candidates = await outbox.due(conn, now=utcnow(), limit=self.batch_size)
        for event in candidates:
            try:
                await self._publish_in_transaction(limit=1, only=event.id)
            except UNREACHABLE:
                raise
            except Exception as exc:
                async with self.units.begin() as unit:
                    await self._record_refusal(unit, event, exc)
        return len(candidates)

    async def _publish_in_transaction(self, *, limit: int, only: int | None = None) -> int:
        now = utcnow()
        async with self.db.write() as conn:
            if not self.db.is_sqlite:
                await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_PG_RELAY_LOCK})"))
            events = await outbox.due(conn, now=now, limit=limit, only=only)
            if events:
                await self.bus.publish_in(conn, [e.message() for e in events])
                await outbox.published(conn, [e.id for e in events], now, keep=self.keep_published)
        if events:
            self.bus.after_commit({e.topic for e in events})
            count_published(e.topic for e in events)
            log.debug("relay.published", count=len(events))
        return len(events)

    # -- an external bus: lease shards, publish, then mark and release -------------------

    async def _relay_claimed_shards(self) -> int:
        now = utcnow()
        async with self.db.write() as conn:
            shards = await outbox.claim_shards(
                conn,
                owner=self.owner,
                now=now,
                lease_until=now + timedelta(seconds=self.shard_lease_seconds),
                limit=self.shards_per_claim,
            )
            events = await outbox.due(conn, now=now, limit=self.batch_size, shards=shards)
        if not shards:
            return 0
        published: list[OutboxEvent] = []
        refused: dict[int, Exception] = {}
        try:
            try:
                await self.bus.publish([e.message() for e in events])
                published = events
            except UNREACHABLE:
                raise
            except Exception as exc:
                log.warning("relay.batch_failed", error=f"{type(exc).__name__}: {exc}")
                for event in events:
                    try:
                        await self.bus.publish([event.message()])
                        published.append(event)
                    except UNREACHABLE:
                        raise
                    except Exception as refusal:
                        refused[event.id] = refusal
        finally:
            # Also when the bus is down: what did get through is recorded, shards go back.
            async with self.units.begin() as unit:
                conn = unit.conn
                if published:
                    await outbox.published(
                        conn, [e.id for e in published], now, keep=self.keep_published
                    )
                for event in events:
                    if event.id in refused:
                        await self._record_refusal(unit, event, refused[event.id])
                await outbox.release_shards(conn, owner=self.owner, shards=shards, now=now)
        if published:
            count_published(e.topic for e in published)
            log.debug("relay.published", count=len(published), shards=len(shards))
        return len(events)

    # -- shared ----------------------------------------------------------------------------

    async def _record_refusal(self, unit: Unit, event: OutboxEvent, error: Exception) -> None:
        now = unit.now
        attempts = event.attempts + 1
        dead = attempts >= self.max_attempts
        retry_at = now + timedelta(seconds=self.event_backoff.delay(attempts))
        message = f"{type(error).__name__}: {error}"
        metrics.publish_failures.inc()
        await outbox.record_failure(
            unit.conn, event.id, attempts=attempts, error=message, retry_at=retry_at, dead=dead
        )
        if dead and self.dead_letters is not None:
            await self.dead_letters.refused_event(unit, event, message, now)
        (log.error if dead else log.warning)(
            "relay.event_dead_lettered" if dead else "relay.event_failed",
            event_id=event.id,
            topic=event.topic,
            attempts=attempts,
            error=message,
        )
