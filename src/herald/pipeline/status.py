"""The status consumer: keeps each notification's status in step with its deliveries.

It recomputes the status from the delivery rows rather than applying the event, so repeated
or reordered events cannot leave a wrong status behind.
"""

from __future__ import annotations

from herald.bus.base import Message
from herald.clock import utcnow
from herald.domain.messages import DeliveryStatusChanged, decode
from herald.domain.states import aggregate_status
from herald.errors import PoisonMessageError
from herald.observability.logging import get_logger
from herald.pipeline.deadletter import DeadLetterOffice
from herald.store import notifications
from herald.store.database import Database

log = get_logger(__name__)


class StatusUpdater:
    def __init__(self, db: Database, dead_letters: DeadLetterOffice) -> None:
        self.db = db
        self.dead_letters = dead_letters

    async def handle(self, message: Message) -> None:
        try:
            event = decode(DeliveryStatusChanged, message.value)
        except PoisonMessageError as exc:
            await self.dead_letters.poison(message, exc)
            return
        async with self.db.write() as conn:
            statuses = await notifications.delivery_statuses(conn, event.notification_id)
            status = aggregate_status(statuses)
            changed = await notifications.set_status(conn, event.notification_id, status, utcnow())
        if changed:
            log.info("notification.status", notification_id=event.notification_id, status=status)
