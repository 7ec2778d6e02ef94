"""The status consumer: applies status events that builds before this one published.

Stages now settle a notification's status in the transaction that changed its deliveries
(see pipeline/status_changes); events still on the status topic from an earlier build (a
rolling upgrade) are applied here the same way: the status is recomputed from the delivery
rows, so repeated or reordered events cannot leave a wrong status behind, and an event for a
change already settled changes nothing (so do this build's own events, published with
HERALD_STATUS_EVENTS=on). A batch of events is one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from herald.bus.base import Message
from herald.domain.messages import DeliveryStatusChanged, decode
from herald.errors import PoisonMessageError
from herald.pipeline.deadletter import DeadLetterOffice


class StatusUpdater:
    def __init__(self, dead_letters: DeadLetterOffice) -> None:
        self.dead_letters = dead_letters
        self.units = dead_letters.units

    async def handle(self, batch: Sequence[Message]) -> None:
        async with self.units.begin() as unit:
            for message in batch:
                try:
                    event = decode(DeliveryStatusChanged, message.value)
                except PoisonMessageError as exc:
                    await self.dead_letters.file(
                        unit, self.dead_letters.poison_letter(message, exc)
                    )
                    continue
                unit.settle([event.notification_id])
