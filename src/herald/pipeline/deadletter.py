"""File dead letters: a row for inspection and replay, and an event on the ``deadletter`` topic.

Four kinds:
- ``delivery``: a delivery failed permanently or ran out of attempts (payload: its job);
- ``message``: a bus message that cannot be decoded or validated (poison; payload as read);
- ``event``: an outbox event the bus kept refusing (payload as written);
- ``status_webhook``: a status event its subscription's URL kept refusing (payload: its job).
The row and the event are written in the caller's unit of work, with the state change.
"""

from __future__ import annotations

from datetime import datetime

from herald.bus.base import Message
from herald.bus.topics import Topics
from herald.clock import utcnow
from herald.domain.messages import DeadLettered
from herald.ids import uuid7
from herald.observability import metrics, tracing
from herald.observability.logging import get_logger
from herald.pipeline.envelope import envelope
from herald.pipeline.unit import Unit, Units
from herald.store import deadletters, outbox
from herald.store.deadletters import DeadLetter

log = get_logger(__name__)


def describe(error: BaseException) -> tuple[str, str]:
    return type(error).__name__, str(error)[:2000] or type(error).__name__


class DeadLetterOffice:
    def __init__(self, units: Units, topics: Topics) -> None:
        self.units = units
        self.topics = topics

    async def file(self, unit: Unit, letter: DeadLetter) -> None:
        await deadletters.insert(unit.conn, letter)
        event = DeadLettered(
            dead_letter_id=letter.id,
            kind=letter.kind,
            reason=letter.reason,
            error_class=letter.error_class,
            error=letter.error,
            channel=letter.channel,
            provider=letter.provider,
            notification_id=letter.notification_id,
            delivery_id=letter.delivery_id,
            source=letter.source,
            attempts=letter.attempts,
            occurred_at=letter.last_failed_at,
        )
        # The failed message's trace goes on with its dead letter, as with every message.
        trace = letter.headers.get(tracing.HEADER)
        extra = {tracing.HEADER: trace} if trace else None
        unit.publish([envelope(self.topics.deadletter, letter.key or letter.id, event, extra)])
        # Counted inside the caller's transaction: a rollback retried later counts twice,
        # which errs towards an alert rather than away from one.
        metrics.dead_letters.labels(letter.kind, letter.reason, letter.channel or "").inc()
        log.warning(
            "deadletter.filed",
            dead_letter_id=letter.id,
            kind=letter.kind,
            reason=letter.reason,
            error_class=letter.error_class,
            notification_id=letter.notification_id,
            delivery_id=letter.delivery_id,
        )

    async def poison(self, message: Message, error: BaseException) -> str:
        """Park a message that can never be processed; its partition moves on."""
        letter = self.poison_letter(message, error)
        async with self.units.begin() as unit:
            await self.file(unit, letter)
        return letter.id

    @staticmethod
    def poison_letter(message: Message, error: BaseException) -> DeadLetter:
        """The dead letter of a message that cannot be decoded or validated."""
        now = utcnow()
        error_class, text = describe(error)
        return DeadLetter(
            id=uuid7(),
            kind="message",
            status=deadletters.DEAD,
            reason="poison",
            error_class=error_class,
            error=text,
            channel=None,
            provider=None,
            notification_id=message.headers.get("herald-notification-id"),
            delivery_id=message.headers.get("herald-delivery-id"),
            topic=message.topic,
            key=message.key,
            source=f"{message.topic}[{message.partition}]@{message.offset}",
            payload=message.value,
            headers=dict(message.headers),
            attempts=0,
            first_failed_at=now,
            last_failed_at=now,
            replay_count=0,
            replayed_at=None,
        )

    async def refused_event(
        self, unit: Unit, event: outbox.OutboxEvent, error: str, now: datetime
    ) -> str:
        """An outbox event the bus kept refusing (the relay gave up on it)."""
        letter = DeadLetter(
            id=uuid7(),
            kind="event",
            status=deadletters.DEAD,
            reason="refused",
            error_class=error.partition(":")[0] or "BusError",
            error=error,
            channel=None,
            provider=None,
            notification_id=event.headers.get("herald-notification-id"),
            delivery_id=event.headers.get("herald-delivery-id"),
            topic=event.topic,
            key=event.key,
            source=f"outbox#{event.id}",
            payload=event.payload,
            headers=event.headers,
            attempts=event.attempts + 1,
            first_failed_at=now,
            last_failed_at=now,
            replay_count=0,
            replayed_at=None,
        )
        await self.file(unit, letter)
        return letter.id
