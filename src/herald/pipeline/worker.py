"""A channel worker: delivers jobs from ``deliveries.<channel>`` through the channel's
providers (failover order, see ``failover.py``).

Per job:
0. if the delivery's destination is one a caller chose (a webhook's host, an email domain)
   and its circuit for that tenant is open, postpone the job to when the circuit lets a probe
   through, without counting an attempt: it leaves the worker at once, so one tenant's dead
   destinations never hold back anyone else (see herald.domain.destinations);
1. choose a provider (waiting while every circuit is open), then wait for a token of its
   rate limit and a free slot of it (its connection pool): nothing is claimed meanwhile,
   so the lease and the send's time budget cover the send alone, and with the runner's
   bounded in-flight work consumption pauses instead of burning retries;
2. claim the delivery (PENDING or a due retry becomes PROCESSING with a lease); a job for a
   delivery that has already ended is acknowledged without sending, one whose delivery is held
   by a live lease waits for the lease, since the holder may still be sending;
3. send, within 80% of the lease;
4. record the outcome in one transaction: the delivery's state, the attempt in its history,
   the status event, and either the next attempt (transient failure) or a dead letter
   (permanent failure, attempts exhausted).
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime, timedelta

from herald.bus.base import Message
from herald.bus.topics import Topics
from herald.channels.base import OutboundMessage, Provider, SendResult
from herald.clock import seconds_from_now, utcnow
from herald.domain.destinations import CALLER_CHOSEN, circuit_key, destination
from herald.domain.messages import DeliveryJob, DeliveryStatusChanged, decode, encode
from herald.domain.models import DeliveryStatus
from herald.errors import DeliveryError, PoisonMessageError, TransientDeliveryError
from herald.ids import uuid7
from herald.observability import metrics, tracing
from herald.observability.logging import get_logger
from herald.pipeline.deadletter import DeadLetterOffice, describe
from herald.pipeline.envelope import envelope
from herald.pipeline.failover import FailoverChain, ProviderSlot
from herald.pipeline.retries import RetrySchedule
from herald.pipeline.unit import Units
from herald.reliability.circuit import CircuitBreaker, CircuitState, CircuitTable
from herald.reliability.retry import RetryPolicy
from herald.store import deadletters, deliveries, journal
from herald.store.deliveries import Attempt, Claim, ClaimOutcome

log = get_logger(__name__)

# A job postponed while its destination's circuit is half open waits this long (the probe
# in flight decides the circuit's fate in about a send's time).
PROBE_WAIT_SECONDS = 2.0


class ChannelWorker:
    def __init__(
        self,
        units: Units,
        topics: Topics,
        providers: FailoverChain | Provider,
        policy: RetryPolicy,
        *,
        lease_seconds: float,
        dead_letters: DeadLetterOffice,
        retries: RetrySchedule,
        owner: str = "worker",
        destinations: CircuitTable | None = None,
    ) -> None:
        self.units = units
        self.db = units.db
        self.topics = topics
        if not isinstance(providers, FailoverChain):
            providers = FailoverChain([ProviderSlot(providers, CircuitBreaker(providers.name))])
        self.providers = providers
        self.policy = policy
        self.lease_seconds = lease_seconds
        self.dead_letters = dead_letters
        self.retries = retries
        self.owner = owner  # this worker process: its own leases it may take back at once
        # Circuits of the destinations callers choose, per tenant (see the module docstring).
        self.destinations = destinations or CircuitTable(CircuitBreaker)

    async def handle(self, message: Message) -> None:
        try:
            job = decode(DeliveryJob, message.value)
        except PoisonMessageError as exc:
            await self.dead_letters.poison(message, exc)
            return
        where = destination(job.channel, job.recipient)
        circuit = None
        if where is not None:
            circuit = self.destinations.get(circuit_key(job.tenant_id, where))
            if not circuit.usable() and not self._waited_enough(job):
                await self._postpone(job, message, circuit, where)
                return
        slot, probe = await self.providers.choose()
        destination_probe = None
        if circuit is not None and circuit.usable():
            destination_probe = await circuit.ready()  # at once: claims a due probe
        try:
            await self._deliver(job, message, slot, circuit)
        finally:
            if probe is not None:  # a no-op once the send has settled the probe
                slot.breaker.release_probe(probe)
            if circuit is not None and destination_probe is not None:
                circuit.release_probe(destination_probe)

    def _waited_enough(self, job: DeliveryJob) -> bool:
        """A job put off for longer than its retries could ever take is attempted anyway (its
        failures count as usual), so a dead destination's deliveries end in a dead letter
        instead of being put off for as long as its circuit stays open."""
        if job.accepted_at is None:
            return False
        waited = (utcnow() - job.accepted_at).total_seconds()
        return waited > self.policy.horizon + self.lease_seconds

    async def _postpone(
        self, job: DeliveryJob, message: Message, circuit: CircuitBreaker, where: str
    ) -> None:
        """The destination's circuit is open: the job comes back when it lets a probe through
        (spread a little, so the waiting jobs do not all arrive at once)."""
        if circuit.state == CircuitState.OPEN:
            wait = circuit.seconds_until_usable() + random.uniform(0, 1)
        else:
            wait = random.uniform(0.5, 1.5) * PROBE_WAIT_SECONDS
        now = utcnow()
        due = now + timedelta(seconds=wait)
        trace = {k: v for k, v in message.headers.items() if k == tracing.HEADER}
        async with self.units.begin() as unit:
            postponed = await deliveries.postpone(
                unit.conn, job.delivery_id, job_attempt=job.attempt, due=due, now=now
            )
            if postponed:
                self.retries.schedule(unit, job, due, trace)
                detail = f"circuit of {where} is {circuit.state}; until {due.isoformat()}"
                step = journal.Step(
                    job.notification_id, journal.DEFERRED, now, job.delivery_id, job.channel, detail
                )
                unit.record([step])
        if postponed:
            metrics.deliveries_postponed.labels(job.channel).inc()
        log.info(
            "delivery.postponed" if postponed else "delivery.skipped_job",
            delivery_id=job.delivery_id,
            channel=job.channel,
            destination=where,
            due=due.isoformat() if postponed else None,
        )

    async def _deliver(
        self,
        job: DeliveryJob,
        message: Message,
        slot: ProviderSlot,
        circuit: CircuitBreaker | None,
    ) -> None:
        if slot.throttle is not None:
            waited = await slot.throttle.take()
            if waited:
                metrics.rate_limit_waits.labels(slot.name).inc()
                metrics.rate_limit_wait_seconds.labels(slot.name).inc(waited)
        pause = 0.05
        while True:
            async with slot.sends:
                claim = await self._claim(job)
                if claim.outcome == ClaimOutcome.CLAIMED:
                    with tracing.span(
                        "delivery.attempt",
                        message.headers.get(tracing.HEADER),
                        delivery_id=job.delivery_id,
                        channel=job.channel,
                        attempt=claim.attempts,
                    ) as traceparent:
                        trace = tracing.headers(traceparent)
                        await self._attempt(job, claim, slot, circuit, trace)
                    return
            if claim.outcome != ClaimOutcome.BUSY:
                log.info(
                    "delivery.skipped_job",
                    delivery_id=job.delivery_id,
                    outcome=claim.outcome,
                    status=claim.status,
                )
                return
            # Another worker holds it: it may finish in a moment (a duplicate job) or have
            # died (then its lease lapses). Look again soon, more slowly each time.
            assert claim.lease_until is not None
            remaining = (claim.lease_until - utcnow()).total_seconds()
            await asyncio.sleep(min(max(remaining, 0.0) + 0.01, pause))
            pause = min(pause * 2, 1.0)

    async def _claim(self, job: DeliveryJob) -> Claim:
        now = utcnow()
        async with self.db.write() as conn:
            return await deliveries.claim(
                conn,
                job.delivery_id,
                job_attempt=job.attempt,
                now=now,
                lease_until=seconds_from_now(self.lease_seconds, now),
                owner=self.owner,
            )

    async def _attempt(
        self,
        job: DeliveryJob,
        claim: Claim,
        slot: ProviderSlot,
        circuit: CircuitBreaker | None,
        trace: dict[str, str],
    ) -> None:
        started = utcnow()
        attempt = claim.attempts
        provider = slot.provider
        outbound = OutboundMessage(
            delivery_id=job.delivery_id,
            notification_id=job.notification_id,
            channel=job.channel,
            recipient=job.recipient,
            subject=job.content.subject,
            body=job.content.body,
            attempt=attempt,
            html=job.content.html,
            data=dict(job.content.data),
            headers=dict(job.content.headers),
            user_id=job.user_id,
            category=job.category,
            priority=job.priority,
            tenant_id=job.tenant_id,
        )
        clock = time.perf_counter()
        error: DeliveryError
        try:
            # Finish well inside the lease, or another worker may take over mid-send.
            async with asyncio.timeout(self.lease_seconds * 0.8):
                with tracing.span("provider.send", trace[tracing.HEADER], provider=provider.name):
                    result = await provider.send(outbound)
        except TimeoutError:
            error = TransientDeliveryError(f"send took longer than {self.lease_seconds * 0.8:g}s")
        except DeliveryError as exc:
            error = exc
        except Exception as exc:
            # A provider should raise typed errors; anything else is treated as transient.
            log.exception("delivery.provider_bug", provider=provider.name)
            error = TransientDeliveryError(f"{type(exc).__name__}: {exc}")
        else:
            self._observe_call(job, provider.name, "ok", clock)
            slot.breaker.succeeded()
            if circuit is not None:
                circuit.succeeded()
            await self._sent(job, attempt, started, result, trace)
            return
        self._observe_call(
            job, provider.name, "transient" if error.transient else "permanent", clock
        )
        blames_destination = error.destination or job.channel in CALLER_CHOSEN
        if not error.transient:
            # The provider and the destination answered; the message was at fault.
            slot.breaker.succeeded()
            if circuit is not None:
                circuit.succeeded()
        elif circuit is not None and blames_destination:
            circuit.failed()  # the provider's own circuit learns nothing from it
        else:
            slot.breaker.failed()
        await self._failed(job, attempt, started, error, provider.name, trace)

    @staticmethod
    def _observe_call(job: DeliveryJob, provider: str, outcome: str, clock: float) -> None:
        metrics.provider_call_seconds.labels(job.channel, provider, outcome).observe(
            time.perf_counter() - clock
        )

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

    async def _sent(
        self,
        job: DeliveryJob,
        attempt: int,
        started: datetime,
        result: SendResult,
        trace: dict[str, str],
    ) -> None:
        now = utcnow()
        event = self._status_event(job, DeliveryStatus.SENT, attempt)
        async with self.units.begin() as unit:
            conn = unit.conn
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
                await deliveries.record_attempt(
                    conn,
                    Attempt(
                        job.delivery_id, attempt, result.provider, DeliveryStatus.SENT, started, now
                    ),
                )
                unit.publish([envelope(self.topics.status, job.user_key, event, trace)])
        if not owned:
            log.warning("delivery.lease_lost", delivery_id=job.delivery_id, attempt=attempt)
            return
        self._count(job, result.provider, DeliveryStatus.SENT, final=True)
        if job.accepted_at is not None:
            metrics.end_to_end_seconds.labels(job.channel).observe(
                (now - job.accepted_at).total_seconds()
            )
        log.info(
            "delivery.sent",
            delivery_id=job.delivery_id,
            notification_id=job.notification_id,
            channel=job.channel,
            provider=result.provider,
            attempt=attempt,
            trace_id=tracing.trace_id(trace),
        )

    async def _failed(
        self,
        job: DeliveryJob,
        attempt: int,
        started: datetime,
        error: DeliveryError,
        provider: str,
        trace: dict[str, str],
    ) -> None:
        decision = self.policy.decide(error, attempt)
        now = utcnow()
        status = DeliveryStatus.DEAD_LETTERED if decision.give_up else DeliveryStatus.RETRY_PENDING
        retry_at = None if decision.retry_in is None else now + timedelta(seconds=decision.retry_in)
        error_class, text = describe(error)
        async with self.units.begin() as unit:
            conn = unit.conn
            owned = await deliveries.finish(
                conn,
                job.delivery_id,
                attempt=attempt,
                status=status,
                now=now,
                error=text,
                next_attempt_at=retry_at,
                provider=provider,
            )
            if owned:
                await deliveries.record_attempt(
                    conn,
                    Attempt(
                        job.delivery_id,
                        attempt,
                        provider,
                        status,
                        started,
                        now,
                        error_class,
                        text,
                        retry_at,
                    ),
                )
                event = self._status_event(job, status, attempt, text)
                unit.publish([envelope(self.topics.status, job.user_key, event, trace)])
                if retry_at is not None:
                    next_job = job.model_copy(update={"attempt": attempt})
                    self.retries.schedule(unit, next_job, retry_at, trace)
                else:
                    first = await deliveries.first_failure(conn, job.delivery_id) or started
                    await self.dead_letters.file(
                        unit,
                        deadletters.DeadLetter(
                            id=uuid7(),
                            kind="delivery",
                            status=deadletters.DEAD,
                            reason=decision.reason,
                            error_class=error_class,
                            error=text,
                            channel=job.channel,
                            provider=provider,
                            notification_id=job.notification_id,
                            delivery_id=job.delivery_id,
                            topic=self.topics.deliveries(job.channel),
                            key=job.user_key,
                            source=None,
                            payload=encode(job),
                            headers=trace,
                            attempts=attempt,
                            first_failed_at=first,
                            last_failed_at=now,
                            replay_count=0,
                            replayed_at=None,
                        ),
                    )
        if not owned:
            log.warning("delivery.lease_lost", delivery_id=job.delivery_id, attempt=attempt)
            return
        self._count(job, provider, status, final=retry_at is None)
        if retry_at is not None:
            metrics.delivery_retries.labels(job.channel, provider).inc()
        log.warning(
            "delivery.failed",
            delivery_id=job.delivery_id,
            notification_id=job.notification_id,
            channel=job.channel,
            provider=provider,
            attempt=attempt,
            error_class=error_class,
            error=text,
            decision=decision.reason,
            retry_in=None if decision.retry_in is None else round(decision.retry_in, 3),
            trace_id=tracing.trace_id(trace),
        )

    @staticmethod
    def _count(job: DeliveryJob, provider: str, status: DeliveryStatus, *, final: bool) -> None:
        metrics.delivery_attempts.labels(job.channel, provider, status.value).inc()
        if final:
            metrics.deliveries.labels(job.channel, provider, status.value).inc()
