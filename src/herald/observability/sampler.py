"""Gauges that describe stored state, sampled every few seconds: the outbox backlog, the
dead-letter queue's depth and each consumer group's lag.

Each process samples what its roles own (the relay the outbox and dead letters, a worker the
lag of its groups), so no scrape ever waits on a database or a broker. A worker also stores
its rate-limit waits per provider (its counters) beside its circuits, for the console: a
process's metrics are its own, the store is everyone's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from herald.bus.base import Bus
from herald.clock import utcnow
from herald.observability import metrics
from herald.observability.logging import get_logger
from herald.pipeline.stall import StallWatch
from herald.store import circuits, deadletters, outbox, staged_batches
from herald.store.database import Database
from herald.wakeup import sleep_unless

log = get_logger(__name__)


class Sampler:
    def __init__(
        self,
        db: Database,
        bus: Bus,
        *,
        interval: float,
        stored_state: bool,
        groups: Mapping[str, Sequence[str]],
        stall_watch: StallWatch | None = None,
        worker: str | None = None,
    ) -> None:
        self.db = db
        self.bus = bus
        self.interval = interval
        self.stored_state = stored_state  # the outbox and dead letters
        self.groups = groups  # consumer group -> its topics
        self.stall_watch = stall_watch
        self.worker = worker  # a worker's id: its rate-limit waits are stored
        self._waits_stored: dict[str, tuple[int, float]] = {}
        # Series seen before: when one disappears (a DLQ emptied), it must read 0, not linger.
        self._depth_seen: set[tuple[str, str]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sample_once()
            except Exception as exc:
                # The gauges keep their last values; the next round tries again.
                log.warning("metrics.sample_failed", error=f"{type(exc).__name__}: {exc}")
            await sleep_unless(stop, self.interval)

    async def sample_once(self) -> None:
        if self.stored_state:
            async with self.db.read() as conn:
                pending, oldest_age = await outbox.backlog(conn, utcnow())
                depth = await deadletters.depth(conn)
                staged = await staged_batches.backlog(conn)
            metrics.outbox_pending.set(pending)
            metrics.staged_pending.set(staged)
            metrics.outbox_oldest_age_seconds.set(oldest_age)
            for kind, channel in self._depth_seen - depth.keys():
                metrics.dead_letters_pending.labels(kind, channel).set(0)
            for (kind, channel), count in depth.items():
                metrics.dead_letters_pending.labels(kind, channel).set(count)
            self._depth_seen |= depth.keys()
        for group, topics in self.groups.items():
            positions = await self.bus.positions(group, topics)
            for tp, position in positions.items():
                metrics.consumer_lag.labels(group, tp.topic, str(tp.partition)).set(position.lag)
            if self.stall_watch is not None:
                self.stall_watch.sampled(group, positions)
        if self.worker is not None:
            waits = rate_limit_waits()
            # Only what changed. A provider whose circuit row is not written yet (the worker
            # starting) is stored with its next wait: its counters are 0 until then.
            changed = {p: v for p, v in waits.items() if self._waits_stored.get(p) != v}
            if changed:
                async with self.db.write() as conn:
                    await circuits.save_waits(conn, self.worker, changed)
                self._waits_stored |= changed


def rate_limit_waits() -> dict[str, tuple[int, float]]:
    """This process's rate-limit waits per provider: (sends that waited, seconds waited)."""
    counts = _totals(metrics.rate_limit_waits)
    seconds = _totals(metrics.rate_limit_wait_seconds)
    return {p: (int(counts[p]), seconds.get(p, 0.0)) for p in counts}


def _totals(counter: Any) -> dict[str, float]:
    return {
        sample.labels["provider"]: sample.value
        for family in counter.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }
