"""Receipts in: what providers say about deliveries after accepting them, applied.

A receipt moves its delivery only as the state machine allows (domain/states): one that comes
late or out of order (a DELIVERED after a BOUNCED) changes nothing and is stored as ``late``;
the same receipt again is stored once and applied once. One that overtakes the worker's own
record of the send (the provider called back before the worker committed SENT) is stored as
``early`` and applied by ``apply_early`` once the delivery is SENT: looked at again a few
times within seconds by the process that took it, then by the maintenance sweep. A
hard bounce or a complaint puts the address on the tenant's suppression list, in the same
transaction. The notification's status follows at commit (Unit.settle).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from herald.domain.receipts import TARGET, Receipt, ReceiptOutcome, delivery_named
from herald.domain.states import IN_PROGRESS, can_transition
from herald.observability import metrics
from herald.observability.logging import get_logger
from herald.pipeline.status_changes import StatusChanges
from herald.pipeline.unit import Unit, Units
from herald.store import receipts, suppressions
from herald.store.receipts import Target

log = get_logger(__name__)

EARLY_BATCH = 500  # early receipts looked at per sweep transaction
# Receipts kept per delivery: a provider reports a handful; beyond this, those that would move
# nothing are dropped (a flood of bounces by mail, or of opens and clicks, cannot fill the
# table, nor crowd out a real bounce or complaint).
MAX_PER_DELIVERY = 50
# When the process that took an early receipt looks again (seconds after the last look): the
# worker records a send within milliseconds unless its provider was slow.
EARLY_LOOKS = (0.1, 0.3, 1.0, 3.0)

Spawn = Callable[[Coroutine[Any, Any, None], str], None]


class Receipts:
    def __init__(
        self, units: Units, status_changes: StatusChanges, spawn: Spawn | None = None
    ) -> None:
        self.units = units
        self.status_changes = status_changes
        self.spawn = spawn
        self._chasing = False  # a look again is under way

    async def take(self, batch: list[Receipt], *, signed: bool = True) -> list[ReceiptOutcome]:
        """Store and apply these receipts in one transaction; what became of each. Receipts
        nobody signed (bounces by mail) are kept only for a delivery Herald knows."""
        outcomes: list[ReceiptOutcome] = []
        async with self.units.begin() as unit:
            # Every delivery the batch names, locked at once in id order: two batches naming
            # the same deliveries in another order take turns instead of deadlocking.
            named = [r.delivery_id for r in batch if delivery_named(r.delivery_id)]
            targets = await receipts.targets(unit.conn, named)
            for receipt in batch:
                outcome = await self._take(unit, receipt, targets, signed=signed)
                outcomes.append(outcome)
        for receipt, outcome in zip(batch, outcomes, strict=True):
            _count(receipt, outcome)
        if ReceiptOutcome.EARLY in outcomes and self.spawn is not None and not self._chasing:
            self._chasing = True
            self.spawn(self._look_again(), "receipts.early")
        return outcomes

    async def _take(
        self, unit: Unit, receipt: Receipt, targets: dict[str, Target], *, signed: bool
    ) -> ReceiptOutcome:
        found = _ours(receipt, targets.get(receipt.delivery_id))
        if found is None and not signed:
            return ReceiptOutcome.DROPPED
        outcome = _outcome(receipt, found)
        if (
            found is not None
            and outcome not in (ReceiptOutcome.APPLIED, ReceiptOutcome.EARLY)
            and await receipts.count_for(unit.conn, found.delivery_id) >= MAX_PER_DELIVERY
        ):
            # One more that moves nothing: not kept (a late hard bounce still suppresses).
            await self._suppress(unit, receipt, found)
            return ReceiptOutcome.DROPPED
        stored = await receipts.add(
            unit.conn,
            receipt,
            notification_id=None if found is None else found.notification_id,
            outcome=outcome,
            now=unit.now,
        )
        if not stored:
            return ReceiptOutcome.DUPLICATE
        if found is not None:
            targets[found.delivery_id] = await self._apply(unit, receipt, found, outcome)
        return outcome

    async def _look_again(self) -> None:
        try:
            for delay in EARLY_LOOKS:
                await asyncio.sleep(delay)
                await self.apply_early()
                async with self.units.db.read() as conn:
                    if not await receipts.any_early(conn):
                        return
        finally:
            self._chasing = False

    async def apply_early(self) -> int:
        """Apply the receipts that came before their delivery was recorded as sent and now
        can be (the delivery was SENT since, or ended otherwise); how many were settled."""
        settled: list[tuple[Receipt, ReceiptOutcome]] = []
        async with self.units.begin() as unit:
            # Only those whose delivery has moved on (others would hide newer ones), each
            # taken by one process (two sweeps at once skip each other's).
            due = await receipts.early(unit.conn, limit=EARLY_BATCH, lock=True)
            targets = await receipts.targets(unit.conn, [e.receipt.delivery_id for e in due])
            for stored in due:
                found = _ours(stored.receipt, targets.get(stored.receipt.delivery_id))
                outcome = _outcome(stored.receipt, found)
                if outcome == ReceiptOutcome.EARLY:
                    continue
                if found is not None:
                    targets[found.delivery_id] = await self._apply(
                        unit, stored.receipt, found, outcome
                    )
                notification_id = None if found is None else found.notification_id
                await receipts.settle_early(unit.conn, stored.id, outcome, notification_id)
                settled.append((stored.receipt, outcome))
        for receipt, outcome in settled:
            _count(receipt, outcome)
        if settled:
            log.info("receipts.early_applied", count=len(settled))
        return len(settled)

    async def _apply(
        self, unit: Unit, receipt: Receipt, found: Target, outcome: ReceiptOutcome
    ) -> Target:
        """What a receipt does to its delivery (locked by ``receipts.targets``): moves it if
        ``outcome`` says so, and suppresses the address for a hard bounce or a complaint
        even when it came too late to move anything. The delivery as it is now."""
        if outcome == ReceiptOutcome.EARLY:
            return found
        if outcome == ReceiptOutcome.APPLIED and receipt.kind in TARGET:
            status = TARGET[receipt.kind]
            if await receipts.move(unit.conn, found.delivery_id, status, unit.now):
                error = " ".join(filter(None, (receipt.code, receipt.detail))) or None
                self.status_changes.changed(
                    unit, found, status, attempts=found.attempts, error=error
                )
                found = replace(found, status=status)
        await self._suppress(unit, receipt, found)
        return found

    async def _suppress(self, unit: Unit, receipt: Receipt, found: Target) -> None:
        """Put the delivery's address on its tenant's list, if the receipt says to."""
        reason = receipt.suppression
        if reason is not None and await suppressions.add(
            unit.conn,
            found.tenant_id,
            found.channel,
            found.recipient,
            reason=reason,
            now=unit.now,
            detail=_cause(receipt),
        ):
            metrics.suppressions_added.labels(found.channel, reason).inc()
            log.info("receipt.suppressed", delivery_id=found.delivery_id, reason=reason)


def _ours(receipt: Receipt, found: Target | None) -> Target | None:
    """``found``, if the receipt can be about it: a provider reports on its own channel
    (a bounce by mail says nothing about a text message)."""
    if found is None or (receipt.channel is not None and receipt.channel != found.channel):
        return None
    return found


def _outcome(receipt: Receipt, found: Target | None) -> ReceiptOutcome:
    """What the receipt will do to ``found`` (APPLIED: apply it)."""
    if found is None:
        return ReceiptOutcome.UNKNOWN
    status = TARGET.get(receipt.kind)
    if status is None:  # progress, a soft bounce: nothing to move
        return ReceiptOutcome.APPLIED if receipt.suppression else ReceiptOutcome.RECORDED
    if found.status in IN_PROGRESS:
        # The worker has not recorded the send yet (or a retry is under way): wait for it.
        return ReceiptOutcome.EARLY
    if not can_transition(found.status, status):
        return ReceiptOutcome.LATE
    return ReceiptOutcome.APPLIED


def _cause(receipt: Receipt) -> str:
    what = f"{receipt.provider} receipt {receipt.kind}"
    if receipt.code:
        what += f" {receipt.code}"
    if receipt.detail:
        what += f": {receipt.detail}"
    return what[:1000]


def _count(receipt: Receipt, outcome: ReceiptOutcome) -> None:
    metrics.receipts.labels(receipt.provider, receipt.kind, outcome).inc()
