"""A channel worker: delivers jobs from ``deliveries.<channel>`` through the channel's
providers (failover order, see ``failover.py``), a batch at a time (one job per user: see the
runner).

Per batch:
0. jobs whose destination is one a caller chose (a webhook's host, an email domain) and whose
   circuit for that tenant is open are put off to when the circuit lets a probe through,
   without counting an attempt: they leave the worker at once, so one tenant's dead
   destinations never hold back anyone else (see herald.domain.destinations); poison is
   dead-lettered; both in one transaction;
1. choose a provider (waiting while every circuit is open). Then, in waves of as many jobs as
   the provider carries at once (its connection pool): wait for a token of its rate limit per
   job, claim the wave's deliveries in one transaction (PENDING or a due retry becomes
   PROCESSING with a lease), and send them concurrently, each within 80% of the lease. So the
   lease and the send's time budget cover the send alone, and with the runner's bounded
   in-flight work consumption pauses instead of burning retries. A job for a delivery that has
   already ended is acknowledged without sending; one whose delivery is held by a live lease
   waits for the lease, since the holder may still be sending;
2. record every outcome in one transaction: each delivery's state, the attempt in its
   history, its status event, and either the next attempt (transient failure) or a dead
   letter (permanent failure, attempts exhausted).
When the provider's circuit is half open, one job probes it alone before the others go.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from herald.bus.base import Message
from herald.bus.topics import Topics
from herald.channels.base import OutboundMessage, Provider, SendResult
from herald.clock import seconds_from_now, utcnow
from herald.domain.destinations import CALLER_CHOSEN, circuit_key, destination
from herald.domain.messages import DeliveryJob, decode, encode
from herald.domain.models import DeliveryStatus
from herald.errors import (
    AddressGoneError,
    DeliveryError,
    PoisonMessageError,
    TransientDeliveryError,
)
from herald.ids import uuid7
from herald.observability import metrics, tracing
from herald.observability.logging import get_logger
from herald.pipeline.deadletter import DeadLetterOffice, describe
from herald.pipeline.failover import FailoverChain, ProviderSlot
from herald.pipeline.retries import RetrySchedule
from herald.pipeline.status_changes import StatusChanges
from herald.pipeline.unit import Unit, Units
from herald.pipeline.unsubscribe_links import UnsubscribeLinks
from herald.reliability.circuit import CircuitBreaker, CircuitState, CircuitTable
from herald.reliability.retry import RetryPolicy
from herald.store import deadletters, deliveries, journal, suppressions, users
from herald.store.deliveries import Attempt, Claim, ClaimOutcome

log = get_logger(__name__)

# A job postponed while its destination's circuit is half open waits this long (the probe
# in flight decides the circuit's fate in about a send's time).
PROBE_WAIT_SECONDS = 2.0


@dataclass
class _Job:
    message: Message
    job: DeliveryJob
    circuit: CircuitBreaker | None = None  # its destination's, if a caller chose it
    probe: int | None = None  # the destination circuit's probe this job carries


@dataclass(frozen=True)
class _Sent:
    """One send's outcome, to be recorded: a result, or the error it failed with."""

    job: DeliveryJob
    attempt: int
    started: datetime
    provider: str
    trace: dict[str, str]
    result: SendResult | None = None
    error: DeliveryError | None = None


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
        unsubscribe_links: UnsubscribeLinks | None = None,
        status_changes: StatusChanges | None = None,
    ) -> None:
        self.units = units
        self.status_changes = status_changes or StatusChanges(topics)
        self.unsubscribe_links = unsubscribe_links
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

    async def handle(self, batch: Sequence[Message]) -> None:
        poison: list[tuple[Message, PoisonMessageError]] = []
        put_off: list[tuple[_Job, str]] = []
        ready: list[_Job] = []
        for message in batch:
            try:
                job = _Job(message, decode(DeliveryJob, message.value))
            except PoisonMessageError as exc:
                poison.append((message, exc))
                continue
            where = destination(job.job.channel, job.job.recipient)
            if where is not None:
                job.circuit = self.destinations.get(circuit_key(job.job.tenant_id, where))
                if not job.circuit.usable() and not self._waited_enough(job.job):
                    put_off.append((job, where))
                    continue
                if job.circuit.usable():
                    job.probe = await job.circuit.ready()  # at once: claims a due probe
            ready.append(job)
        try:
            if poison or put_off:
                await self._set_aside(poison, put_off)
            if ready:
                await self._deliver(ready)
        finally:
            for job in ready:
                if job.circuit is not None and job.probe is not None:
                    job.circuit.release_probe(job.probe)  # a no-op once a send settled it

    def _waited_enough(self, job: DeliveryJob) -> bool:
        """A job put off for longer than its retries could ever take is attempted anyway (its
        failures count as usual), so a dead destination's deliveries end in a dead letter
        instead of being put off for as long as its circuit stays open."""
        if job.accepted_at is None:
            return False
        waited = (utcnow() - job.accepted_at).total_seconds()
        return waited > self.policy.horizon + self.lease_seconds

    # -- 0. what does not go out now --------------------------------------------------------

    async def _set_aside(
        self, poison: list[tuple[Message, PoisonMessageError]], put_off: list[tuple[_Job, str]]
    ) -> None:
        """Dead-letter the poison and put off the jobs of open circuits, in one transaction."""
        async with self.units.begin() as unit:
            for message, exc in poison:
                await self.dead_letters.file(unit, DeadLetterOffice.poison_letter(message, exc))
            postponed = [await self._postpone(unit, job, where) for job, where in put_off]
        for (job, where), due in zip(put_off, postponed, strict=True):
            if due is not None:
                metrics.deliveries_postponed.labels(job.job.channel).inc()
            log.info(
                "delivery.postponed" if due else "delivery.skipped_job",
                delivery_id=job.job.delivery_id,
                channel=job.job.channel,
                destination=where,
                due=due.isoformat() if due else None,
            )

    async def _postpone(self, unit: Unit, job: _Job, where: str) -> datetime | None:
        """The destination's circuit is open: the job comes back when it lets a probe through
        (spread a little, so the waiting jobs do not all arrive at once). None if the job may
        not start its delivery anyway (a stale duplicate)."""
        circuit = job.circuit
        assert circuit is not None
        if circuit.state == CircuitState.OPEN:
            wait = circuit.seconds_until_usable() + random.uniform(0, 1)
        else:
            wait = random.uniform(0.5, 1.5) * PROBE_WAIT_SECONDS
        delivery = job.job
        due = unit.now + timedelta(seconds=wait)
        postponed = await deliveries.postpone(
            unit.conn, delivery.delivery_id, job_attempt=delivery.attempt, due=due, now=unit.now
        )
        if not postponed:
            return None
        trace = {k: v for k, v in job.message.headers.items() if k == tracing.HEADER}
        self.retries.schedule(unit, delivery, due, trace)
        detail = f"circuit of {where} is {circuit.state}; until {due.isoformat()}"
        unit.record(
            [
                journal.Step(
                    delivery.notification_id,
                    journal.DEFERRED,
                    unit.now,
                    delivery.delivery_id,
                    delivery.channel,
                    detail,
                )
            ]
        )
        return due

    # -- 1. claim and send, in waves --------------------------------------------------------

    async def _deliver(self, jobs: list[_Job]) -> None:
        slot, probe = await self.providers.choose()
        if probe is not None:
            # Half open: one job probes the provider alone; the rest choose again after it.
            try:
                await self._deliver_alone(jobs[0], slot)
            finally:
                slot.breaker.release_probe(probe)  # a no-op once the send settled it
            if len(jobs) > 1:
                await self._deliver(jobs[1:])
            return
        sent: list[_Sent] = []
        busy: list[_Job] = []
        for chunk in self._chunks(jobs, slot):
            claims = await self._claim([job.job for job in chunk])
            # Each send must end within the lease of its claim, whatever it waited for.
            deadline = time.monotonic() + self.lease_seconds * 0.8
            sending = []
            for job, claim in zip(chunk, claims, strict=True):
                if claim.outcome == ClaimOutcome.CLAIMED:
                    sending.append(self._send(job, claim, slot, deadline))
                elif claim.outcome == ClaimOutcome.BUSY:
                    busy.append(job)
                else:
                    _skipped(job.job, claim)
            sent += await asyncio.gather(*sending)
        if sent:
            await self._record(sent)
        for job in busy:
            await self._deliver_alone(job, slot)

    def _chunks(self, jobs: list[_Job], slot: ProviderSlot) -> list[list[_Job]]:
        """The jobs claimed at once: all of them, unless the provider's rate limit would keep
        the last ones waiting for a token past a quarter of the lease."""
        size = len(jobs)
        if slot.throttle is not None:
            size = max(1, int(slot.throttle.rate * self.lease_seconds / 4))
        return [jobs[i : i + size] for i in range(0, len(jobs), size)]

    async def _deliver_alone(self, job: _Job, slot: ProviderSlot) -> None:
        """One job, waiting while another worker holds its delivery: it may finish in a moment
        (a duplicate job) or have died (then its lease lapses)."""
        pause = 0.05
        while True:
            (claim,) = await self._claim([job.job])
            if claim.outcome == ClaimOutcome.CLAIMED:
                deadline = time.monotonic() + self.lease_seconds * 0.8
                await self._record([await self._send(job, claim, slot, deadline)])
                return
            if claim.outcome != ClaimOutcome.BUSY:
                _skipped(job.job, claim)
                return
            # Look again soon, more slowly each time.
            assert claim.lease_until is not None
            remaining = (claim.lease_until - utcnow()).total_seconds()
            await asyncio.sleep(min(max(remaining, 0.0) + 0.01, pause))
            pause = min(pause * 2, 1.0)

    @staticmethod
    @asynccontextmanager
    async def _turn(slot: ProviderSlot) -> AsyncIterator[None]:
        """A send's turn under the provider's rate limit, held until the send is over."""
        if slot.throttle is None:
            yield
            return
        async with slot.throttle.turn() as waited:
            if waited:
                metrics.rate_limit_waits.labels(slot.name).inc()
                metrics.rate_limit_wait_seconds.labels(slot.name).inc(waited)
            yield

    async def _claim(self, jobs: list[DeliveryJob]) -> list[Claim]:
        now = utcnow()
        lease_until = seconds_from_now(self.lease_seconds, now)
        async with self.units.begin() as unit:
            claims = await deliveries.claim_many(
                unit.conn,
                [(job.delivery_id, job.attempt) for job in jobs],
                now=now,
                lease_until=lease_until,
                owner=self.owner,
            )
            claims = await self._skip_suppressed(unit, jobs, claims)
            # A cancellation asked for while under way ends a delivery SKIPPED here.
            unit.settle(
                job.notification_id
                for job, claim in zip(jobs, claims, strict=True)
                if claim.status == DeliveryStatus.SKIPPED
            )
        return claims

    async def _skip_suppressed(
        self, unit: Unit, jobs: list[DeliveryJob], claims: list[Claim]
    ) -> list[Claim]:
        """Claimed jobs whose address went on the suppression list after they were routed
        (a bounce or a complaint came back meanwhile: the job was queued, deferred or
        waiting for a retry) end SKIPPED instead of being sent, in the claim's transaction."""
        claimed = [
            job
            for job, claim in zip(jobs, claims, strict=True)
            if claim.outcome == ClaimOutcome.CLAIMED
        ]
        found = await suppressions.suppressed(
            unit.conn, [(job.tenant_id, job.channel, job.recipient) for job in claimed]
        )
        if not found:
            return claims
        result = list(claims)
        for i, (job, claim) in enumerate(zip(jobs, claims, strict=True)):
            key = (job.tenant_id, job.channel, job.recipient)
            if claim.outcome != ClaimOutcome.CLAIMED or key not in found:
                continue
            reason = suppressions.SKIP_REASON
            await deliveries.skip_claimed(
                unit.conn, job.delivery_id, attempt=claim.attempts, reason=reason, now=unit.now
            )
            step = journal.Step(
                job.notification_id,
                journal.SKIPPED,
                unit.now,
                delivery_id=job.delivery_id,
                channel=job.channel,
                detail=reason,
            )
            unit.record([step])
            self.status_changes.changed(
                unit, job, DeliveryStatus.SKIPPED, attempts=claim.attempts - 1, error=reason
            )
            metrics.suppressed_skips.labels(channel=job.channel).inc()
            result[i] = Claim(
                ClaimOutcome.FINISHED, attempts=claim.attempts - 1, status=DeliveryStatus.SKIPPED
            )
        return result

    async def _send(self, job: _Job, claim: Claim, slot: ProviderSlot, deadline: float) -> _Sent:
        """One claimed job: a free connection of the provider, a token of its rate limit, the
        send; all before ``deadline`` (monotonic), inside the claim's lease."""
        delivery = job.job
        with tracing.span(
            "delivery.attempt",
            job.message.headers.get(tracing.HEADER),
            delivery_id=delivery.delivery_id,
            channel=delivery.channel,
            attempt=claim.attempts,
        ) as traceparent:
            trace = tracing.headers(traceparent)
            started = utcnow()
            async with slot.sends, self._turn(slot):
                outcome = await self._call(
                    delivery, claim.attempts, slot.provider, trace, deadline - time.monotonic()
                )
        sent = _Sent(delivery, claim.attempts, started, slot.name, trace, *outcome)
        _settle_circuits(sent, slot, job.circuit)
        return sent

    async def _unsubscribe_headers(self, job: DeliveryJob) -> dict[str, str]:
        links, user, category = self.unsubscribe_links, job.user_id, job.category
        if not job.content.unsubscribe or links is None or user is None or category is None:
            return {}
        return await links.headers(job.tenant_id, user, category)

    async def _call(
        self,
        job: DeliveryJob,
        attempt: int,
        provider: Provider,
        trace: dict[str, str],
        budget: float,
    ) -> tuple[SendResult | None, DeliveryError | None]:
        if budget <= 0:
            # Its turn came too late to finish inside the lease: another worker could take
            # the delivery over mid-send. An attempt, retried like a timeout.
            return None, TransientDeliveryError("no turn to send within the lease")
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
            headers={**job.content.headers, **await self._unsubscribe_headers(job)},
            user_id=job.user_id,
            category=job.category,
            priority=job.priority,
            tenant_id=job.tenant_id,
        )
        clock = time.perf_counter()
        error: DeliveryError
        try:
            # Finish well inside the lease, or another worker may take over mid-send.
            async with asyncio.timeout(budget):
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
            _observe_call(job, provider.name, "ok", clock)
            return result, None
        _observe_call(job, provider.name, "transient" if error.transient else "permanent", clock)
        return None, error

    # -- 2. record every outcome ------------------------------------------------------------

    async def _record(self, sent: list[_Sent]) -> None:
        """Every outcome in one transaction: only attempts this worker still owns (a lapsed
        lease may have been taken over); what was sent in one statement for all of them."""
        async with self.units.begin() as unit:
            owned = await deliveries.owned(
                unit.conn, [(s.job.delivery_id, s.attempt) for s in sent]
            )
            kept = [s for s in sent if (s.job.delivery_id, s.attempt) in owned]
            await deliveries.finish_sent(
                unit.conn,
                [
                    deliveries.Sent(
                        s.job.delivery_id,
                        s.attempt,
                        s.result.provider,
                        s.result.provider_message_id,
                    )
                    for s in kept
                    if s.result is not None
                ],
                unit.now,
            )
            attempts = [await self._record_outcome(unit, s) for s in kept]
            await deliveries.record_attempts(unit.conn, attempts)
        for s in sent:
            if (s.job.delivery_id, s.attempt) in owned:
                self._report(s, unit.now)
            else:
                log.warning("delivery.lease_lost", delivery_id=s.job.delivery_id, attempt=s.attempt)

    async def _forget_address(self, unit: Unit, job: DeliveryJob) -> None:
        """The provider says the user's token or subscription is gone: it is removed from
        the user (so no later notification tries it), and the timeline says so."""
        if await users.forget_address(
            unit.conn, job.tenant_id, job.user_id or "", job.channel, job.recipient, unit.now
        ):
            metrics.addresses_removed.labels(channel=job.channel).inc()
            unit.record(
                [
                    journal.Step(
                        job.notification_id,
                        journal.ADDRESS_REMOVED,
                        unit.now,
                        delivery_id=job.delivery_id,
                        channel=job.channel,
                    )
                ]
            )
            log.info("user.address_removed", user_id=job.user_id, channel=job.channel)

    async def _record_outcome(self, unit: Unit, sent: _Sent) -> Attempt:
        """What follows from one owned attempt's outcome (a SENT delivery is already marked as
        such): its status event, and for a failure the delivery's new state and either the
        next attempt or a dead letter. Returns the attempt for the history."""
        job, now, conn = sent.job, unit.now, unit.conn
        if sent.result is not None:
            self.status_changes.changed(
                unit, job, DeliveryStatus.SENT, attempts=sent.attempt, trace=sent.trace
            )
            return Attempt(
                job.delivery_id,
                sent.attempt,
                sent.result.provider,
                DeliveryStatus.SENT,
                sent.started,
                now,
            )
        assert sent.error is not None
        decision = self.policy.decide(sent.error, sent.attempt)
        status = DeliveryStatus.DEAD_LETTERED if decision.give_up else DeliveryStatus.RETRY_PENDING
        retry_at = None if decision.retry_in is None else now + timedelta(seconds=decision.retry_in)
        error_class, text = describe(sent.error)
        await deliveries.finish(
            conn,
            job.delivery_id,
            attempt=sent.attempt,
            status=status,
            now=now,
            error=text,
            next_attempt_at=retry_at,
            provider=sent.provider,
        )
        self.status_changes.changed(
            unit, job, status, attempts=sent.attempt, error=text, trace=sent.trace
        )
        if isinstance(sent.error, AddressGoneError) and job.user_id is not None:
            await self._forget_address(unit, job)
        if retry_at is not None:
            next_job = job.model_copy(update={"attempt": sent.attempt})
            self.retries.schedule(unit, next_job, retry_at, sent.trace)
        else:
            first = await deliveries.first_failure(conn, job.delivery_id) or sent.started
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
                    provider=sent.provider,
                    notification_id=job.notification_id,
                    delivery_id=job.delivery_id,
                    topic=self.topics.deliveries(job.channel),
                    key=job.user_key,
                    source=None,
                    payload=encode(job),
                    headers=sent.trace,
                    attempts=sent.attempt,
                    first_failed_at=first,
                    last_failed_at=now,
                    replay_count=0,
                    replayed_at=None,
                ),
            )
        return Attempt(
            job.delivery_id,
            sent.attempt,
            sent.provider,
            status,
            sent.started,
            now,
            error_class,
            text,
            retry_at,
        )

    def _report(self, sent: _Sent, now: datetime) -> None:
        """Metrics and the log line of an outcome, once it is recorded."""
        job = sent.job
        if sent.result is not None:
            _count(job, sent.result.provider, DeliveryStatus.SENT, final=True)
            if job.accepted_at is not None:
                metrics.end_to_end_seconds.labels(job.channel).observe(
                    (now - job.accepted_at).total_seconds()
                )
            log.info(
                "delivery.sent",
                delivery_id=job.delivery_id,
                notification_id=job.notification_id,
                channel=job.channel,
                provider=sent.result.provider,
                attempt=sent.attempt,
                trace_id=tracing.trace_id(sent.trace),
            )
            return
        assert sent.error is not None
        decision = self.policy.decide(sent.error, sent.attempt)
        final = decision.give_up
        status = DeliveryStatus.DEAD_LETTERED if final else DeliveryStatus.RETRY_PENDING
        _count(job, sent.provider, status, final=final)
        if not final:
            metrics.delivery_retries.labels(job.channel, sent.provider).inc()
        error_class, text = describe(sent.error)
        log.warning(
            "delivery.failed",
            delivery_id=job.delivery_id,
            notification_id=job.notification_id,
            channel=job.channel,
            provider=sent.provider,
            attempt=sent.attempt,
            error_class=error_class,
            error=text,
            decision=decision.reason,
            trace_id=tracing.trace_id(sent.trace),
        )


def _settle_circuits(sent: _Sent, slot: ProviderSlot, circuit: CircuitBreaker | None) -> None:
    """What an outcome tells the provider's circuit and the destination's."""
    if sent.error is None or not sent.error.transient:
        # Sent, or refused for good: the provider and the destination answered (a refusal is
        # the message's fault).
        slot.breaker.succeeded()
        if circuit is not None:
            circuit.succeeded()
    elif circuit is not None and (sent.error.destination or sent.job.channel in CALLER_CHOSEN):
        circuit.failed()  # the provider's own circuit learns nothing from it
    else:
        slot.breaker.failed()


def _skipped(job: DeliveryJob, claim: Claim) -> None:
    log.info(
        "delivery.skipped_job",
        delivery_id=job.delivery_id,
        outcome=claim.outcome,
        status=claim.status,
    )


def _observe_call(job: DeliveryJob, provider: str, outcome: str, clock: float) -> None:
    metrics.provider_call_seconds.labels(job.channel, provider, outcome).observe(
        time.perf_counter() - clock
    )


def _count(job: DeliveryJob, provider: str, status: DeliveryStatus, *, final: bool) -> None:
    metrics.delivery_attempts.labels(job.channel, provider, status.value).inc()
    if final:
        metrics.deliveries.labels(job.channel, provider, status.value).inc()
