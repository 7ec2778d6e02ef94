"""Replay dead letters once their cause is fixed: idempotent, and spaced out when in bulk.

A ``delivery`` letter reopens its delivery (PENDING, a fresh attempt budget) and queues its
job, a ``status_webhook`` letter its status event likewise; a ``message`` or ``event``
letter publishes its original bytes to its original topic. Either happens in the transaction
that marks the letter REPLAYED, so replaying it again is a no-op. Bulk replays are spaced at
``per_second`` through the outbox's due times, so a large replay cannot flood a provider that
has only just recovered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from herald.bus.base import OutgoingMessage
from herald.bus.topics import Topics
from herald.clock import utcnow
from herald.domain.messages import DeliveryJob, StatusWebhookJob, decode
from herald.domain.models import DeliveryStatus
from herald.errors import PoisonMessageError
from herald.observability.logging import get_logger
from herald.pipeline.envelope import envelope
from herald.pipeline.status_changes import StatusChanges
from herald.pipeline.unit import Unit, Units
from herald.store import deadletters, deliveries, journal, webhook_events
from herald.store.deadletters import DeadLetter, Filters
from herald.store.deliveries import Attempt

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    dead_letter_id: str
    replayed: bool
    detail: str


class Replayer:
    def __init__(
        self,
        units: Units,
        topics: Topics,
        *,
        per_second: float,
        status_changes: StatusChanges | None = None,
    ) -> None:
        self.units = units
        self.status_changes = status_changes or StatusChanges(topics)
        self.db = units.db
        self.topics = topics
        self.per_second = per_second

    async def replay(
        self, letter_id: str, *, delay: float = 0.0, tenant: str | None = None
    ) -> ReplayOutcome:
        """``tenant``: replay only that tenant's letter (None: anyone's, for the operator)."""
        now = utcnow()
        due = now + timedelta(seconds=delay)
        async with self.units.begin() as unit:
            conn = unit.conn
            letter = await deadletters.get(conn, letter_id, lock=True, tenant=tenant)
            if letter is None:
                return ReplayOutcome(letter_id, False, "not found")
            if letter.status != deadletters.DEAD:
                return ReplayOutcome(letter_id, False, "already replayed")
            if letter.kind in ("delivery", deadletters.STATUS_WEBHOOK):
                reopen = (
                    self._reopen_delivery
                    if letter.kind == "delivery"
                    else self._reopen_status_event
                )
                detail = await reopen(unit, letter, now, due)
                if detail is not None:
                    return ReplayOutcome(letter_id, False, detail)
            else:
                message = OutgoingMessage(
                    letter.topic, letter.key or letter.id, letter.payload, letter.headers
                )
                unit.publish([message], available_at=due)
            await deadletters.mark_replayed(conn, letter_id, now)
            if letter.notification_id is not None:
                step = journal.Step(
                    letter.notification_id,
                    journal.REPLAYED,
                    now,
                    letter.delivery_id,
                    letter.channel,
                    f"dead letter {letter_id}",
                )
                unit.record([step])
        log.info("deadletter.replayed", dead_letter_id=letter_id, kind=letter.kind, delay=delay)
        return ReplayOutcome(letter_id, True, "replayed")

    async def _reopen_delivery(
        self, unit: Unit, letter: DeadLetter, now: datetime, due: datetime
    ) -> str | None:
        """Queue the delivery again; returns why not, if it cannot be."""
        conn = unit.conn
        assert letter.delivery_id is not None
        try:
            job = decode(DeliveryJob, letter.payload).model_copy(update={"attempt": 0})
        except PoisonMessageError:
            return "the stored job cannot be read"
        if not await deliveries.reopen(conn, letter.delivery_id, now):
            current = await deliveries.status_of(conn, letter.delivery_id)
            return f"the delivery is {current or 'gone'}, not dead-lettered"
        marker = f"replayed from dead letter {letter.id}"
        await deliveries.record_attempt(
            conn,
            Attempt(letter.delivery_id, 0, None, DeliveryStatus.PENDING, now, now, error=marker),
        )
        self.status_changes.changed(unit, job, DeliveryStatus.PENDING, attempts=0)
        unit.publish([envelope(letter.topic, job.user_key, job)], available_at=due)
        return None

    @staticmethod
    async def _reopen_status_event(
        unit: Unit, letter: DeadLetter, now: datetime, due: datetime
    ) -> str | None:
        """Post the status event again (a fresh attempt budget); returns why not, if not."""
        try:
            job = decode(StatusWebhookJob, letter.payload).model_copy(update={"attempt": 0})
        except PoisonMessageError:
            return "the stored job cannot be read"
        if not await webhook_events.reopen(unit.conn, job.event_id, now):
            return "the status event is gone or not dead-lettered"
        unit.publish([envelope(letter.topic, job.notification_id, job)], available_at=due)
        return None

    async def replay_matching(
        self, filters: Filters, *, limit: int, dry_run: bool
    ) -> tuple[int, list[DeadLetter], list[ReplayOutcome]]:
        """(how many match, the oldest ``limit`` of them, what replaying them did)."""
        async with self.db.read() as conn:
            matched = await deadletters.count(conn, filters)
            letters = await deadletters.list_page(conn, filters, limit=limit, oldest_first=True)
        if dry_run:
            return matched, letters, []
        outcomes = [
            await self.replay(letter.id, delay=i / self.per_second, tenant=filters.tenant)
            for i, letter in enumerate(letters)
        ]
        return matched, letters, outcomes
