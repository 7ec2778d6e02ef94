"""The status webhook sender: posts status events to tenants' subscriptions, a batch of jobs
from ``status_webhooks`` at a time, as the channel workers deliver.

Per batch:
1. claim the events in one transaction: PENDING or a due retry becomes PROCESSING under a
   lease, one more attempt counted. An event whose destination (the tenant's host) has an
   open circuit is put off to when the circuit lets a probe through, no attempt counted, so
   one tenant's dead receiver never holds back anyone else's events. An event another sender
   holds is looked at again when its lease ends (its holder may have died). What has ended,
   waits in its chain, or was replaced by a later job is left alone;
2. post them concurrently, each signed as the webhook channel signs (the tenant's secrets,
   two while one is rotated), through the same guarded client (only public addresses unless
   HERALD_OUTBOUND_ALLOW says otherwise), within the lease;
3. record every outcome in one transaction: SENT; a transient failure's next attempt, due
   after the backoff (its job through the outbox, so nothing waits meanwhile); a permanent
   failure or the last attempt's a dead letter (``status_webhook``: inspect and replay it as
   any other). An event that ended lets the next of its chain go (store/webhook_events).

Events are never made about status webhooks themselves: nothing here changes a delivery.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from herald.bus.base import Message
from herald.channels.webhook import WebhookProvider, target, valid_secrets
from herald.clock import seconds_from_now
from herald.domain import status_events
from herald.domain.destinations import circuit_key, destination
from herald.domain.messages import StatusWebhookJob, decode, encode
from herald.errors import DeliveryError, PoisonMessageError, TransientDeliveryError
from herald.ids import uuid7
from herald.observability import metrics
from herald.observability.logging import get_logger
from herald.pipeline.deadletter import DeadLetterOffice, describe
from herald.pipeline.status_webhooks import Announcer
from herald.pipeline.unit import Unit, Units
from herald.reliability.circuit import CircuitBreaker, CircuitTable
from herald.reliability.retry import RetryPolicy
from herald.store import deadletters, notifications, webhook_events
from herald.store.webhook_events import Event

log = get_logger(__name__)

EVENT_HEADER = "Herald-Webhook-Event"
#: A status event's provider name, where one is named (dead letters, logs).
NAME = "status_webhooks"

TenantSecrets = Callable[[str], Awaitable[Sequence[str]]]


@dataclass
class _Post:
    event: Event
    attempt: int  # this attempt's number, from 1
    circuit: CircuitBreaker
    probe: int | None
    error: DeliveryError | None = field(default=None)


class StatusWebhookSender:
    def __init__(
        self,
        units: Units,
        announcer: Announcer,
        poster: WebhookProvider,
        secrets: TenantSecrets,
        policy: RetryPolicy,
        *,
        lease_seconds: float,
        dead_letters: DeadLetterOffice,
        destinations: CircuitTable,
    ) -> None:
        self.units = units
        self.announcer = announcer
        self.poster = poster
        self.secrets = secrets
        self.policy = policy
        self.lease_seconds = lease_seconds
        self.dead_letters = dead_letters
        self.destinations = destinations

    async def handle(self, batch: Sequence[Message]) -> None:
        jobs: list[StatusWebhookJob] = []
        poison: list[tuple[Message, PoisonMessageError]] = []
        for message in batch:
            try:
                jobs.append(decode(StatusWebhookJob, message.value))
            except PoisonMessageError as exc:
                poison.append((message, exc))
        posts = await self._claim(jobs, poison)
        if not posts:
            return
        try:
            secrets: dict[str, asyncio.Task[list[str]]] = {}
            for post in posts:  # each tenant's secrets looked up once a batch
                tenant = post.event.tenant_id
                if tenant not in secrets:
                    secrets[tenant] = asyncio.ensure_future(valid_secrets(self.secrets(tenant)))
            budget = self.lease_seconds * 0.8
            await asyncio.gather(
                *(self._post(p, secrets[p.event.tenant_id], budget) for p in posts)
            )
        finally:
            _release_probes(posts)  # a no-op for those a post settled
        await self._record(posts)

    # -- 1. claim ---------------------------------------------------------------------------

    async def _claim(
        self, jobs: list[StatusWebhookJob], poison: list[tuple[Message, PoisonMessageError]]
    ) -> list[_Post]:
        posts: list[_Post] = []
        try:
            await self._claim_in_one(jobs, poison, posts)
        except BaseException:
            _release_probes(posts)  # claimed nothing after all
            raise
        return posts

    async def _claim_in_one(
        self,
        jobs: list[StatusWebhookJob],
        poison: list[tuple[Message, PoisonMessageError]],
        posts: list[_Post],
    ) -> None:
        async with self.units.begin() as unit:
            for message, exc in poison:
                await self.dead_letters.file(unit, DeadLetterOffice.poison_letter(message, exc))
            found = await webhook_events.get_many(
                unit.conn, [job.event_id for job in jobs], lock=True
            )
            events = {e.id: e for e in found}
            gone = []
            for job in jobs:
                event = events.get(job.event_id)
                if event is None:
                    continue
                if event.url is None:  # its subscription was deleted meanwhile
                    gone.append(event.subscription_id)
                    continue
                post = await self._claimable(unit, job, event)
                if post is not None:
                    posts.append(post)
            await webhook_events.forget_subscriptions(unit.conn, gone)
            lease_until = seconds_from_now(self.lease_seconds, unit.now)
            await webhook_events.start(
                unit.conn, [p.event.id for p in posts], lease_until=lease_until, now=unit.now
            )

    async def _claimable(self, unit: Unit, job: StatusWebhookJob, event: Event) -> _Post | None:
        """The post of ``event`` this job may make now, if any (see the module docstring)."""
        assert event.url is not None
        started = event.status == webhook_events.PROCESSING
        if started and event.lease_until is not None and event.lease_until > unit.now:
            # Held: its holder may finish in a moment, or have died (then this job is the one
            # that takes it over: whichever attempt it was for); look when the lease ends.
            again = self.announcer.job(
                event.id, event.tenant_id, event.notification_id, event.attempts - 1
            )
            unit.publish([again], available_at=event.lease_until)
            return None
        due = event.status in (webhook_events.PENDING, webhook_events.RETRY_PENDING)
        if not started and not (due and event.attempts == job.attempt):
            return None  # ended, waiting in its chain, or a stale duplicate
        where = destination("webhook", event.url) or event.url
        circuit = self.destinations.get(circuit_key(event.tenant_id, where))
        if not started and not circuit.usable() and not self._waited_enough(event, unit):
            wait = circuit.seconds_until_usable() + random.uniform(0, 1)
            later = unit.now + timedelta(seconds=wait)
            await webhook_events.put_off(unit.conn, event.id, due=later, now=unit.now)
            again = self.announcer.job(
                event.id, event.tenant_id, event.notification_id, event.attempts
            )
            unit.publish([again], available_at=later)
            metrics.status_webhook_posts.labels("put_off").inc()
            return None
        probe = await circuit.ready() if circuit.usable() else None
        return _Post(event, event.attempts + 1, circuit, probe)

    def _waited_enough(self, event: Event, unit: Unit) -> bool:
        """Put off for longer than its retries could take: attempted anyway, so a dead
        receiver's events end in dead letters rather than waiting as long as it is dead."""
        waited = (unit.now - event.created_at).total_seconds()
        return waited > self.policy.horizon + self.lease_seconds

    # -- 2. post ----------------------------------------------------------------------------

    async def _post(self, post: _Post, secrets: asyncio.Task[list[str]], budget: float) -> None:
        event = post.event
        assert event.url is not None
        try:
            body = status_events.document(
                event.id, event.type, event.tenant_id, event.created_at, json.loads(event.data)
            )
            async with asyncio.timeout(budget):
                await self.poster.post_signed(
                    target(event.url), body, event.id, await secrets, {EVENT_HEADER: event.type}
                )
        except DeliveryError as exc:
            post.error = exc
        except TimeoutError:
            post.error = TransientDeliveryError(f"{NAME}: no answer within {budget:g}s")
        except Exception as exc:
            log.exception("status_webhook.post_bug", event_id=event.id)
            post.error = TransientDeliveryError(f"{type(exc).__name__}: {exc}")
        if post.error is None or not post.error.transient:
            post.circuit.succeeded()  # the receiver answered (a refusal is the event's fault)
        else:
            post.circuit.failed()

    # -- 3. record --------------------------------------------------------------------------

    async def _record(self, posts: list[_Post]) -> None:
        async with self.units.begin() as unit:
            conn, now = unit.conn, unit.now
            # The chain's next event may be made meanwhile: take turns on the notification.
            await notifications.lock(conn, {p.event.notification_id for p in posts})
            unit.via_outbox = True  # having locked notifications first (see Unit.via_outbox)
            ended: list[str] = []
            outcomes: list[tuple[_Post, str]] = []
            for post in sorted(posts, key=lambda p: p.event.id):  # events locked in id order
                event, error = post.event, post.error
                if error is None:
                    status, retry_at, text = webhook_events.SENT, None, None
                else:
                    decision = self.policy.decide(error, post.attempt)
                    error_class, text = describe(error)
                    if decision.retry_in is None:
                        status, retry_at = webhook_events.DEAD_LETTERED, None
                    else:
                        status = webhook_events.RETRY_PENDING
                        retry_at = now + timedelta(seconds=decision.retry_in)
                if not await webhook_events.finish(
                    conn,
                    event.id,
                    attempt=post.attempt,
                    status=status,
                    now=now,
                    error=text,
                    next_attempt_at=retry_at,
                ):
                    log.warning("status_webhook.lease_lost", event_id=event.id)
                    continue
                if retry_at is not None:
                    again = self.announcer.job(
                        event.id, event.tenant_id, event.notification_id, post.attempt
                    )
                    unit.publish([again], available_at=retry_at)
                else:
                    ended.append(event.id)
                if status == webhook_events.DEAD_LETTERED:
                    assert text is not None  # a failure's
                    await self._dead_letter(unit, post, decision.reason, error_class, text)
                outcomes.append((post, "retry" if retry_at else status.lower()))
            released = await webhook_events.release(conn, ended, now)
            unit.publish([self.announcer.job(*r) for r in released])
        for post, outcome in outcomes:
            metrics.status_webhook_posts.labels(outcome).inc()
            log.info(
                "status_webhook.posted",
                event_id=post.event.id,
                type=post.event.type,
                notification_id=post.event.notification_id,
                attempt=post.attempt,
                outcome=outcome,
                error=None if post.error is None else str(post.error),
            )

    async def _dead_letter(
        self, unit: Unit, post: _Post, reason: str, error_class: str, text: str
    ) -> None:
        event = post.event
        job = StatusWebhookJob(
            event_id=event.id, tenant_id=event.tenant_id, notification_id=event.notification_id
        )
        await self.dead_letters.file(
            unit,
            deadletters.DeadLetter(
                id=uuid7(),
                kind=deadletters.STATUS_WEBHOOK,
                status=deadletters.DEAD,
                reason=reason,
                error_class=error_class,
                error=text,
                channel=None,
                provider=NAME,
                notification_id=event.notification_id,
                delivery_id=None,
                topic=self.announcer.topics.status_webhooks,
                key=event.notification_id,
                source=f"status event {event.id} ({event.type})",
                payload=encode(job),
                headers={},
                attempts=post.attempt,
                first_failed_at=event.created_at,
                last_failed_at=unit.now,
                replay_count=0,
                replayed_at=None,
            ),
        )


def _release_probes(posts: list[_Post]) -> None:
    """Let the next caller probe a half-open circuit these posts held the probe of."""
    for post in posts:
        if post.probe is not None:
            post.circuit.release_probe(post.probe)
