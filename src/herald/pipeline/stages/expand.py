"""The expander: writes out the notifications of staged batches (see stages/intake.py).

Woken by the commit that stages a batch (the outbox's wake-up, which crosses processes: the
link of `herald serve`'s consumer process, PostgreSQL's NOTIFY), it takes the oldest batches,
writes their notifications, deliveries, jobs and journal and deletes the batches in one
transaction, and repeats until none is left. It runs beside the consumers (`herald serve`'s
consumer process) or the relay (`herald relay`), so the API's process spends its core on
accepting.

A transaction that fails is split: each batch is tried alone, and one that fails alone is
left in place with its error, retried after a backoff; until then its tenant's later batches
wait behind it (their order is its tenant's acceptance order). Nothing is dropped: a batch
leaves its table only in the transaction that wrote its notifications.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from herald.bus.base import Bus
from herald.clock import utcnow
from herald.observability import metrics
from herald.observability.logging import get_logger
from herald.pipeline.stages.intake import Intake
from herald.pipeline.stages.relay import UNREACHABLE
from herald.pipeline.unit import Units
from herald.reliability.backoff import Backoff
from herald.store import staged_batches
from herald.store.staged_batches import StagedBatch
from herald.wakeup import Wakeup, sleep_unless, wait_for_event

log = get_logger(__name__)

# One transaction writes at most this many batches (a thousand notifications each, at most).
BATCHES_PER_TRANSACTION = 1
_BATCH_BACKOFF = Backoff(base=1.0, cap=300.0)  # one batch that fails to expand
_DATABASE_BACKOFF = Backoff(base=0.5, cap=5.0)  # the database out of reach
# Between two looks for waiting batches (each a query) while there are none.
PROBE_SECONDS = 0.025
# While the pipeline stays ``ahead`` messages behind, the waits between two looks at its lag
# (on Kafka a round trip to the broker per consumer group) double from the first to the last:
# looking every 50 ms took a third of the broker's CPU while batches poured in.
_AHEAD_RECHECK = Backoff(base=0.05, cap=0.5)


class Expander:
    def __init__(
        self,
        units: Units,
        intake: Intake,
        wakeup: Wakeup,
        *,
        bus: Bus | None = None,
        groups: Mapping[str, Sequence[str]] | None = None,
        ahead: int = 10_000,
        poll_interval: float = 1.0,
    ) -> None:
        self.units = units
        self.intake = intake
        self.wakeup = wakeup
        self.bus = bus
        self.groups = groups or {}  # the pipeline's consumer groups and their topics
        self.ahead = ahead
        self.poll_interval = poll_interval
        self._looks_behind = 0  # consecutive looks that found the pipeline ahead

    async def _any_waiting(self) -> bool:
        async with self.units.db.read() as conn:
            return await staged_batches.waiting(conn, now=utcnow())

    async def _pipeline_ready(self, stop: asyncio.Event) -> bool:
        """Whether the pipeline's consumers have fewer than ``ahead`` messages waiting; if
        not, waits a moment first (and says no). Notifications written out faster than the
        consumers take them would only queue on the bus; meanwhile the core and SQLite's
        write lock go to accepting, which callers wait for."""
        if self.bus is None or self.ahead <= 0:
            return True
        waiting = 0
        for group, topics in self.groups.items():
            positions = await self.bus.positions(group, topics)
            waiting += sum(p.lag for p in positions.values())
        if waiting < self.ahead:
            self._looks_behind = 0
            return True
        self._looks_behind += 1
        await sleep_unless(stop, _AHEAD_RECHECK.ceiling(self._looks_behind))
        return False

    async def run(self, stop: asyncio.Event) -> None:
        woken = self.wakeup.subscribe()
        stopping = asyncio.ensure_future(stop.wait())
        stopping.add_done_callback(lambda _: woken.set())
        failures = 0
        try:
            while not stop.is_set():
                try:
                    # Most wake-ups are other commits: only a batch waiting is worth the lag's
                    # look-up (a round trip to the broker on Kafka).
                    expanded = 0
                    if await self._any_waiting():
                        if not await self._pipeline_ready(stop):
                            continue
                        expanded = await self.expand_once()
                    failures = 0
                except Exception as exc:  # the database or broker out of reach, or a bug:
                    failures += 1  # the role goes on (its process with it) and tries again
                    log.error("expander.failed", failures=failures, error=f"{exc!r}"[:300])
                    await sleep_unless(stop, _DATABASE_BACKOFF.ceiling(failures))
                    continue
                if not expanded:
                    # Every commit wakes the expander: at most one look per PROBE_SECONDS.
                    await sleep_unless(stop, PROBE_SECONDS)
                    await wait_for_event(woken, self.poll_interval)

        finally:
            stopping.cancel()
            self.wakeup.unsubscribe(woken)

    async def expand_once(self) -> int:
        """Expand the oldest due batches; how many were taken (written or failed)."""
        taken: list[StagedBatch] = []
        try:
            async with self.units.begin() as unit:
                taken = await staged_batches.take(
                    unit.conn, now=unit.now, limit=BATCHES_PER_TRANSACTION
                )
                await self.intake.expand(unit, taken)
            return len(taken)
        except UNREACHABLE:
            raise
        except Exception as exc:
            if not taken:
                raise
            log.warning("expander.group_failed", batches=len(taken), error=f"{exc!r}"[:300])
        for batch in taken:  # rolled back: each again, alone
            await self._expand_alone(batch)
        return len(taken)

    async def _expand_alone(self, batch: StagedBatch) -> None:
        try:
            async with self.units.begin() as unit:
                taken = await staged_batches.take_one(unit.conn, batch.id, now=unit.now)
                await self.intake.expand(unit, taken)
        except UNREACHABLE:
            raise
        except Exception as exc:
            metrics.staged_failures.inc()
            async with self.units.begin() as unit:
                attempts = await staged_batches.record_failure(
                    unit.conn,
                    batch.id,
                    error=f"{type(exc).__name__}: {exc}",
                    now=unit.now,
                    retry_after=_BATCH_BACKOFF.ceiling,
                )
            log.error(
                "expander.batch_failed",
                batch_id=batch.id,
                tenant_id=batch.tenant_id,
                attempts=attempts,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
