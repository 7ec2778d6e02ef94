"""A channel worker: delivers jobs from ``deliveries.<channel>`` through one provider.

Per job: claim the delivery (PENDING or a due retry becomes PROCESSING with a lease), send,
then record the outcome and its status event in one transaction. A job for a delivery that
has already ended is acknowledged without sending; one whose delivery is held by a live lease
waits for the lease, since the holder may still be sending.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from herald.bus.base import Message
from herald.bus.topics import Topics
from herald.channels.base import OutboundMessage, Provider, SendResult
from herald.clock import seconds_from_now, utcnow
from herald.domain.messages import DeliveryJob, DeliveryStatusChanged, decode
from herald.domain.models import DeliveryStatus
from herald.errors import DeliveryError, PoisonMessageError, TransientDeliveryError
from herald.observability.logging import get_logger
from herald.pipeline.envelope import envelope
from herald.reliability.retry import RetryPolicy
from herald.store import deliveries, outbox
from herald.store.database import Database
from herald.store.deliveries import Claim, ClaimOutcome
from herald.wakeup import Wakeup

log = get_logger(__name__)


class ChannelWorker:
    def __init__(
        self,
        db: Database,
        topics: Topics,
        provider: Provider,
        policy: RetryPolicy,
        outbox_wakeup: Wakeup,
        *,
        lease_seconds: float,
    ) -> None:
        self.db = db
        self.topics = topics
        self.provider = provider
        self.policy = policy
        self.outbox_wakeup = outbox_wakeup
        self.lease_seconds = lease_seconds

    async def handle(self, message: Message) -> None:
        try:
            job = decode(DeliveryJob, message.value)
        except PoisonMessageError as exc:
            log.error("delivery.poison", topic=message.topic, offset=message.offset, error=str(exc))
            return
        claim = await self._claim_when_free(job)
        if claim.outcome != ClaimOutcome.CLAIMED:
            log.info(
                "delivery.skipped_job",
                delivery_id=job.delivery_id,
                outcome=claim.outcome,
                status=claim.status,
            )
            return
        attempt = claim.attempts
        outbound = OutboundMessage(
            delivery_id=job.delivery_id,
            notification_id=job.notification_id,
            channel=job.channel,
            recipient=job.recipient,
            subject=job.content.subject,
            body=job.content.body,
            attempt=attempt,
        )
        try:
            # Finish well inside the lease, or another worker may take over mid-send.
            async with asyncio.timeout(self.lease_seconds * 0.8):
                result = await self.provider.send(outbound)
        except TimeoutError:
            error = TransientDeliveryError(f"send took longer than {self.lease_seconds * 0.8:g}s")
            await self._failed(job, attempt, error)
        except DeliveryError as exc:
            await self._failed(job, attempt, exc)
        except Exception as exc:
            # A provider should raise typed errors; anything else is treated as transient.
            log.exception("delivery.provider_bug", provider=self.provider.name)
            await self._failed(job, attempt, TransientDeliveryError(f"{type(exc).__name__}: {exc}"))
        else:
            await self._sent(job, attempt, result)

    async def _claim_when_free(self, job: DeliveryJob) -> Claim:
        while True:
            now = utcnow()
            async with self.db.write() as conn:
                claim = await deliveries.claim(
                    conn,
                    job.delivery_id,
                    job_attempt=job.attempt,
                    now=now,
                    lease_until=seconds_from_now(self.lease_seconds, now),
                )
            if claim.outcome != ClaimOutcome.BUSY:
                return claim
            assert claim.lease_until is not None
            wait = (claim.lease_until - utcnow()).total_seconds()
            log.info("delivery.lease_wait", delivery_id=job.delivery_id, seconds=round(wait, 2))
            await asyncio.sleep(min(max(wait, 0.05), self.lease_seconds) + 0.05)

    def _status_event(
        self, job: DeliveryJob, status: DeliveryStatus, attempt: int, error: str | None = None
    ) -> DeliveryStatusChanged:
        return DeliveryStatusChanged(
            notification_id=job.notification_id,
            delivery_id=job.delivery_id,
            channel=job.channel,
            user_key=job.user_key,
            status=status,
            attempts=attempt,
            error=error,
            occurred_at=utcnow(),
        )

    async def _sent(self, job: DeliveryJob, attempt: int, result: SendResult) -> None:
        now = utcnow()
        event = self._status_event(job, DeliveryStatus.SENT, attempt)
        async with self.db.write() as conn:
            owned = await deliveries.finish(
                conn,
                job.delivery_id,
                attempt=attempt,
                status=DeliveryStatus.SENT,
                now=now,
                provider=result.provider,
                provider_message_id=result.provider_message_id,
            )
            if owned:
                await outbox.add(conn, [envelope(self.topics.status, job.user_key, event)], now=now)
        if not owned:
            log.warning("delivery.lease_lost", delivery_id=job.delivery_id, attempt=attempt)
            return
        self.outbox_wakeup.notify()
        log.info(
            "delivery.sent",
            delivery_id=job.delivery_id,
            notification_id=job.notification_id,
            channel=job.channel,
            provider=result.provider,
            attempt=attempt,
        )

    async def _failed(self, job: DeliveryJob, attempt: int, error: DeliveryError) -> None:
        decision = self.policy.decide(error, attempt)
        now = utcnow()
        status = DeliveryStatus.FAILED if decision.give_up else DeliveryStatus.RETRY_PENDING
        retry_at = None if decision.retry_in is None else now + timedelta(seconds=decision.retry_in)
        messages = [
            envelope(
                self.topics.status,
                job.user_key,
                self._status_event(job, status, attempt, str(error)),
            )
        ]
        async with self.db.write() as conn:
            owned = await deliveries.finish(
                conn,
                job.delivery_id,
                attempt=attempt,
                status=status,
                now=now,
                error=str(error),
                next_attempt_at=retry_at,
                provider=self.provider.name,
            )
            if owned:
                await outbox.add(conn, messages, now=now)
                if retry_at is not None:
                    retry = envelope(
                        self.topics.deliveries(job.channel),
                        job.user_key,
                        job.model_copy(update={"attempt": attempt}),
                    )
                    await outbox.add(conn, [retry], now=now, available_at=retry_at)
        if not owned:
            log.warning("delivery.lease_lost", delivery_id=job.delivery_id, attempt=attempt)
            return
        self.outbox_wakeup.notify()
        log.warning(
            "delivery.failed",
            delivery_id=job.delivery_id,
            notification_id=job.notification_id,
            channel=job.channel,
            attempt=attempt,
            error=str(error),
            decision=decision.reason,
            retry_in=None if decision.retry_in is None else round(decision.retry_in, 3),
        )
