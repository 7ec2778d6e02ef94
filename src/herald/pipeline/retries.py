"""A delivery's next attempt, scheduled without holding back anyone's other messages.

- Embedded bus: the job goes into the outbox with ``available_at`` = the due time; the relay
  publishes it to the channel's topic when it is due (a due-time on the log).
- Kafka: the job goes to the ``deliveries.retry`` topic at once, with the due time and the
  channel topic in headers; the retry scheduler (part of every `herald worker`) holds each
  job until it is due, then publishes it to the channel's topic. Jobs wait per key, so a long
  wait holds back nobody else; until a job is republished its offset is not committed, so a
  crash re-reads it.
Either way the job carries its attempt number, so a duplicate of an older job is recognised.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from herald.bus.base import Bus, Message, OutgoingMessage
from herald.bus.topics import Topics
from herald.clock import utcnow
from herald.domain.messages import DeliveryJob
from herald.errors import PoisonMessageError
from herald.pipeline.deadletter import DeadLetterOffice
from herald.pipeline.envelope import envelope
from herald.pipeline.runner import HandBack
from herald.pipeline.unit import Unit
from herald.wakeup import sleep_unless

DUE_HEADER = "herald-due-at"
TARGET_HEADER = "herald-retry-topic"


class RetrySchedule:
    def __init__(self, topics: Topics, *, retry_topic: bool) -> None:
        self.topics = topics
        self.retry_topic = retry_topic

    def schedule(
        self,
        unit: Unit,
        job: DeliveryJob,
        due: datetime,
        headers: dict[str, str] | None = None,
    ) -> None:
        target = self.topics.deliveries(job.channel)
        if not self.retry_topic:
            unit.publish([envelope(target, job.user_key, job, headers)], available_at=due)
            return
        extra = {**(headers or {}), DUE_HEADER: due.isoformat(), TARGET_HEADER: target}
        unit.publish([envelope(self.topics.retry, job.user_key, job, extra)])


class RetryScheduler:
    """Consumes ``deliveries.retry`` (Kafka): each job is published again once it is due."""

    def __init__(self, bus: Bus, dead_letters: DeadLetterOffice, stopping: asyncio.Event) -> None:
        self.bus = bus
        self.dead_letters = dead_letters
        self.stopping = stopping

    async def handle(self, message: Message) -> None:
        try:
            due = datetime.fromisoformat(message.headers[DUE_HEADER])
            target = message.headers[TARGET_HEADER]
        except (KeyError, ValueError) as exc:
            await self.dead_letters.poison(message, PoisonMessageError(f"bad retry headers: {exc}"))
            return
        wait = (due - utcnow()).total_seconds()
        if wait > 0 and await sleep_unless(self.stopping, wait):
            raise HandBack  # stopping: leave it uncommitted for the next owner
        headers = {k: v for k, v in message.headers.items() if k not in (DUE_HEADER, TARGET_HEADER)}
        await self.bus.publish([OutgoingMessage(target, message.key or "", message.value, headers)])
