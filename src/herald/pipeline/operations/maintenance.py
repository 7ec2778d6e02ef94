"""Housekeeping: expire idempotency keys, drop published outbox rows, old log messages and
old status events posted, let the recovery sweep put back on the bus what it lost, and apply
the receipts that came before their delivery was recorded as sent."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from herald.bus.base import Bus
from herald.bus.embedded import EmbeddedBus
from herald.clock import utcnow
from herald.observability.logging import get_logger
from herald.pipeline.operations.recovery import Recovery
from herald.pipeline.stages.receipts import Receipts
from herald.store import console_sessions, idempotency, outbox, recipient_caps, webhook_events
from herald.store.database import Database
from herald.wakeup import sleep_unless

log = get_logger(__name__)


class Maintenance:
    def __init__(
        self,
        db: Database,
        bus: Bus,
        *,
        interval: float,
        outbox_retention: float,
        log_retention: float,
        recovery: Recovery | None = None,
        receipts: Receipts | None = None,
        status_event_retention: float = 0.0,
    ) -> None:
        self.db = db
        self.bus = bus
        self.interval = interval
        self.outbox_retention = timedelta(seconds=outbox_retention)
        self.log_retention = timedelta(seconds=log_retention)
        self.recovery = recovery
        self.receipts = receipts
        # 0: kept
        self.status_event_retention = timedelta(seconds=status_event_retention) or None

    async def run(self, stop: asyncio.Event) -> None:
        while not await sleep_unless(stop, self.interval):
            try:
                await self.run_once()
            except Exception:
                log.exception("maintenance.failed")

    async def run_once(self) -> dict[str, int]:
        now = utcnow()
        keys = await idempotency.purge_expired(self.db, now)
        events = await outbox.purge_published(self.db, now - self.outbox_retention)
        counts_purged = await recipient_caps.purge_before(self.db, now.date())  # days are UTC
        sessions = await console_sessions.purge_expired(self.db, now)
        messages = 0
        if isinstance(self.bus, EmbeddedBus):
            messages = await self.bus.delete_older_than(now - self.log_retention)
        sent = 0
        if self.status_event_retention is not None:
            sent = await webhook_events.purge_sent(self.db, now - self.status_event_retention)
        counts = {
            "idempotency_keys": keys,
            "outbox_events": events,
            "log_messages": messages,
            "recipient_counts": counts_purged,
            "console_sessions": sessions,
            "sent_status_events": sent,
        }
        if any(counts.values()):
            log.info("maintenance.purged", **counts)
        if self.recovery is not None:
            counts |= await self.recovery.run_once()
        if self.receipts is not None:
            counts["early_receipts"] = await self.receipts.apply_early()
        return counts
