"""The router: turns an accepted notification into one delivery job per channel.

Jobs go through the outbox, so routing a notification twice (a redelivery after a crash)
only produces duplicate jobs, which workers recognise by the delivery's state.
"""

from __future__ import annotations

from herald.bus.base import Message
from herald.bus.topics import Topics
from herald.clock import utcnow
from herald.domain.messages import DeliveryJob, NotificationRequested, decode
from herald.errors import PoisonMessageError
from herald.observability import tracing
from herald.observability.logging import get_logger
from herald.pipeline.deadletter import DeadLetterOffice
from herald.pipeline.envelope import envelope
from herald.store import journal, outbox
from herald.store.database import Database
from herald.wakeup import Wakeup

log = get_logger(__name__)


class Router:
    def __init__(
        self, db: Database, topics: Topics, outbox_wakeup: Wakeup, dead_letters: DeadLetterOffice
    ) -> None:
        self.db = db
        self.topics = topics
        self.outbox_wakeup = outbox_wakeup
        self.dead_letters = dead_letters

    async def handle(self, message: Message) -> None:
        try:
            event = decode(NotificationRequested, message.value)
        except PoisonMessageError as exc:
            await self.dead_letters.poison(message, exc)
            return
        with tracing.span(
            "notification.route",
            message.headers.get(tracing.HEADER),
            notification_id=event.notification_id,
        ) as traceparent:
            await self._route(event, message, traceparent)

    async def _route(
        self, event: NotificationRequested, message: Message, traceparent: str
    ) -> None:
        jobs = [
            envelope(
                self.topics.deliveries(plan.channel),
                event.user_key,
                DeliveryJob(
                    delivery_id=plan.delivery_id,
                    notification_id=event.notification_id,
                    channel=plan.channel,
                    recipient=plan.recipient,
                    user_key=event.user_key,
                    content=event.content,
                    accepted_at=event.created_at,
                ),
                tracing.headers(traceparent),
            )
            for plan in event.deliveries
        ]
        now = utcnow()
        channels = ",".join(plan.channel for plan in event.deliveries)
        steps = [
            # The bus stamps a message when it is appended: that is when it was published.
            journal.Step(event.notification_id, journal.PUBLISHED, message.timestamp),
            journal.Step(event.notification_id, journal.ROUTED, now, detail=f"to {channels}"),
        ]
        async with self.db.write() as conn:
            await outbox.add(conn, jobs, now=now)
            await journal.record(conn, steps)
        self.outbox_wakeup.notify()
        log.debug(
            "notification.routed",
            notification_id=event.notification_id,
            jobs=len(jobs),
            trace_id=tracing.trace_id(tracing.headers(traceparent)),
        )
