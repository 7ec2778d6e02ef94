"""The status consumer: keeps each notification's status in step with its deliveries.

It recomputes the status from the delivery rows rather than applying the event, so repeated
or reordered events cannot leave a wrong status behind. A batch of events is one transaction:
one read of the deliveries of every notification named, one update per new status.
"""

from __future__ import annotations

from collections.abc import Sequence

from herald.bus.base import Message
from herald.domain.messages import DeliveryStatusChanged, decode
from herald.domain.states import aggregate_status
from herald.errors import PoisonMessageError
from herald.observability.logging import get_logger
from herald.pipeline.deadletter import DeadLetterOffice
from herald.store import notifications

log = get_logger(__name__)


class StatusUpdater:
    def __init__(self, dead_letters: DeadLetterOffice) -> None:
        self.dead_letters = dead_letters
        self.units = dead_letters.units

    async def handle(self, batch: Sequence[Message]) -> None:
        async with self.units.begin() as unit:
            named: list[str] = []
            for message in batch:
                try:
                    named.append(decode(DeliveryStatusChanged, message.value).notification_id)
                except PoisonMessageError as exc:
                    await self.dead_letters.file(
                        unit, self.dead_letters.poison_letter(message, exc)
                    )
            found = await notifications.delivery_statuses_of(unit.conn, set(named))
            statuses = {i: aggregate_status(found[i]) for i in found}
            changed = await notifications.set_statuses(unit.conn, statuses, unit.now)
        for notification_id in changed:
            log.info(
                "notification.status",
                notification_id=notification_id,
                status=statuses[notification_id],
            )
