"""The router: turns an accepted notification into one delivery job per delivery.

It applies the user's preferences at sending time (a user may change them between the
request and its ``send_at``): a delivery the user opted out of, or to an address on the
tenant's suppression list, is SKIPPED with the reason;
one that falls in quiet hours, or is scheduled, waits in the retry schedule until it is due
(never dropped); the rest are queued at once. Jobs go through the outbox, so routing a
notification twice (a redelivery after a crash) only produces duplicate jobs, which workers
recognise by the delivery's state.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError

from herald.bus.base import Message
from herald.bus.topics import Topics
from herald.clock import utcnow
from herald.domain.messages import (
    DeliveryJob,
    DeliveryPlan,
    NotificationRequested,
    decode,
)
from herald.domain.models import DeliveryStatus
from herald.domain.preferences import Preferences, decide
from herald.errors import PoisonMessageError
from herald.observability import metrics, tracing
from herald.observability.logging import get_logger
from herald.pipeline.deadletter import DeadLetterOffice
from herald.pipeline.envelope import envelope
from herald.pipeline.retries import RetrySchedule
from herald.pipeline.status_changes import StatusChanges
from herald.pipeline.unit import Unit, Units
from herald.store import deliveries, journal, recipient_caps, suppressions, users
from herald.store.database import Connection
from herald.store.users import UserRecord

log = get_logger(__name__)
SUPPRESSED = suppressions.SKIP_REASON


@dataclass
class _Route:
    """What routing one notification decided, before it is written."""

    event: NotificationRequested
    trace: dict[str, str]
    now: datetime
    now_jobs: list[DeliveryJob] = field(default_factory=list)
    later: list[tuple[DeliveryJob, datetime]] = field(default_factory=list)
    skipped: list[tuple[DeliveryPlan, str]] = field(default_factory=list)
    steps: list[journal.Step] = field(default_factory=list)


class Router:
    def __init__(
        self,
        units: Units,
        topics: Topics,
        dead_letters: DeadLetterOffice,
        *,
        retries: RetrySchedule,
        critical_categories: Collection[str] = (),
        daily_caps: Mapping[str, int] | None = None,
        status_changes: StatusChanges | None = None,
    ) -> None:
        self.units = units
        self.status_changes = status_changes or StatusChanges(topics)
        self.db = units.db
        self.topics = topics
        self.dead_letters = dead_letters
        self.retries = retries
        self.critical_categories = frozenset(critical_categories)
        self.daily_caps = dict(daily_caps or {})  # channel -> deliveries per recipient per day

    async def handle(self, batch: Sequence[Message]) -> None:
        """Route a batch of notifications (one per user: see the runner) in one transaction;
        their users are read in one query per tenant, and the daily caps of all their
        recipients are taken in one order (see _over_cap)."""
        events: list[tuple[Message, NotificationRequested]] = []
        poison: list[tuple[Message, PoisonMessageError]] = []
        for message in batch:
            try:
                events.append((message, decode(NotificationRequested, message.value)))
            except PoisonMessageError as error:
                poison.append((message, error))
        found, suppressed = await self._look_up([event for _, event in events])
        routes = []
        for message, event in events:
            user = None if event.user_id is None else found[(event.tenant_id, event.user_id)]
            with tracing.span(
                "notification.route",
                message.headers.get(tracing.HEADER),
                notification_id=event.notification_id,
            ) as traceparent:
                trace = tracing.headers(traceparent)
                routes.append(self._plan(event, message, trace, user, suppressed))
        async with self.units.begin() as unit:
            for message, problem in poison:
                await self.dead_letters.file(unit, DeadLetterOffice.poison_letter(message, problem))
            capped = await self._over_cap(unit.conn, routes)
            for route in routes:
                await self._apply(unit, route, capped)
        for route in routes:
            log.debug(
                "notification.routed",
                notification_id=route.event.notification_id,
                jobs=len(route.now_jobs),
                deferred=len(route.later),
                skipped=len(route.skipped),
                trace_id=tracing.trace_id(route.trace),
            )

    async def _look_up(
        self, events: list[NotificationRequested]
    ) -> tuple[dict[tuple[str, str], UserRecord | None], set[tuple[str, str, str]]]:
        """The events' users, and which of their (tenant, channel, address) are suppressed:
        one query each per tenant."""
        wanted: dict[str, set[str]] = {}
        addresses: dict[str, set[tuple[str, str]]] = {}
        for event in events:
            if event.user_id is not None:
                wanted.setdefault(event.tenant_id, set()).add(event.user_id)
            addresses.setdefault(event.tenant_id, set()).update(
                (p.channel, p.recipient) for p in event.deliveries
            )
        found: dict[tuple[str, str], UserRecord | None] = {}
        suppressed: set[tuple[str, str, str]] = set()
        if not events:
            return found, suppressed
        async with self.db.read() as conn:
            for tenant, ids in wanted.items():
                records = await users.get_many(conn, tenant, sorted(ids))
                found |= {(tenant, i): records.get(i) for i in ids}
            for tenant, pairs in addresses.items():
                if await suppressions.any_for(conn, tenant):  # most tenants suppress none
                    hits = await suppressions.among(conn, tenant, pairs)
                    suppressed |= {(tenant, channel, address) for channel, address in hits}
        return found, suppressed

    def _plan(
        self,
        event: NotificationRequested,
        message: Message,
        trace: dict[str, str],
        user: UserRecord | None,
        suppressed: set[tuple[str, str, str]],
    ) -> _Route:
        """What the user's preferences make of each delivery: now, later, or skipped (also
        when its address is on the tenant's suppression list)."""
        prefs = _preferences(user)
        now = utcnow()
        start = max(now, event.send_at) if event.send_at else now
        critical = event.category in self.critical_categories
        route = _Route(event, trace, now)
        # The bus stamps a message when it is appended: that is when it was published.
        route.steps.append(
            journal.Step(event.notification_id, journal.PUBLISHED, message.timestamp)
        )
        for plan in event.deliveries:
            if (event.tenant_id, plan.channel, plan.recipient) in suppressed:
                route.skipped.append((plan, SUPPRESSED))
                route.steps.append(_step(event, plan, journal.SKIPPED, now, SUPPRESSED))
                metrics.suppressed_skips.labels(channel=plan.channel).inc()
                continue
            decision = decide(
                prefs,
                channel=plan.channel,
                category=event.category,
                priority=event.priority,
                critical=critical,
                timezone=user.profile.timezone if user else None,
                now=start,
            )
            if decision.action == "skip":
                route.skipped.append((plan, decision.reason or "preferences"))
                route.steps.append(_step(event, plan, journal.SKIPPED, now, decision.reason))
                continue
            job = _job(event, plan)
            due = decision.until if decision.action == "defer" else start
            if due is not None and due > now:
                route.later.append((job, due))
                why = decision.reason if decision.action == "defer" else "send_at"
                detail = f"{why} until {due.isoformat()}"
                route.steps.append(_step(event, plan, journal.DEFERRED, now, detail))
            else:
                route.now_jobs.append(job)
        return route

    async def _apply(self, unit: Unit, route: _Route, capped: set[str]) -> None:
        """Write the route in the batch's unit: skips, deferrals, jobs, journal steps."""
        event, now, trace = route.event, route.now, route.trace
        conn = unit.conn
        steps = [step for step in route.steps if step.delivery_id not in capped]
        skipped = list(route.skipped)
        for plan in (p for p in event.deliveries if p.delivery_id in capped):
            skipped.append((plan, "daily_cap"))
            steps.append(_step(event, plan, journal.SKIPPED, now, "daily_cap"))
        route.skipped = skipped
        route.later = [(job, due) for job, due in route.later if job.delivery_id not in capped]
        route.now_jobs = [job for job in route.now_jobs if job.delivery_id not in capped]
        jobs = [
            envelope(self.topics.deliveries(job.channel), event.user_key, job, trace)
            for job in route.now_jobs
        ]
        skipped_ids = {plan.delivery_id for plan, _ in skipped}
        routed = [p.channel for p in event.deliveries if p.delivery_id not in skipped_ids]
        steps.insert(
            1,
            journal.Step(
                event.notification_id,
                journal.ROUTED,
                now,
                detail=f"to {','.join(routed) or 'none'}",
            ),
        )
        for plan, reason in skipped:
            if await deliveries.skip(conn, plan.delivery_id, reason, now):
                self.status_changes.changed(
                    unit,
                    _job(event, plan),
                    DeliveryStatus.SKIPPED,
                    attempts=0,
                    error=reason,
                    trace=trace,
                )
        for job, due in route.later:
            await deliveries.defer(conn, job.delivery_id, due, now)
            self.retries.schedule(unit, job, due, trace)
        unit.publish(jobs)
        unit.record(steps)

    async def _over_cap(self, conn: Connection, routes: list[_Route]) -> set[str]:
        """The deliveries whose recipient already got the channel's daily cap today."""
        wanted = [
            recipient_caps.Counted(
                route.event.tenant_id,
                job.channel,
                job.recipient,
                job.delivery_id,
                self.daily_caps[job.channel],
            )
            for route in routes
            for job in [*route.now_jobs, *(j for j, _ in route.later)]
            if job.channel in self.daily_caps
        ]
        if not wanted:
            return set()
        # In one order everywhere: each address is locked until commit, and two routers
        # locking the same two addresses in opposite orders would deadlock.
        wanted.sort(key=lambda w: (w.channel, w.recipient, w.tenant))
        # Counted on the day the batch was routed (its routes' times are milliseconds apart).
        over = await recipient_caps.admit_many(conn, wanted, now=routes[0].now)
        for w in wanted:
            if w.delivery_id in over:
                metrics.daily_cap_skips.labels(channel=w.channel).inc()
        return over


def _preferences(user: UserRecord | None) -> Preferences | None:
    if user is None or not user.preferences:
        return None
    try:
        return Preferences.model_validate(user.preferences)
    except ValidationError:  # stored by an older build; the API validates what it stores
        log.warning("router.bad_preferences", user_id=user.id)
        return None


def _job(event: NotificationRequested, plan: DeliveryPlan) -> DeliveryJob:
    return DeliveryJob(
        delivery_id=plan.delivery_id,
        tenant_id=event.tenant_id,
        notification_id=event.notification_id,
        channel=plan.channel,
        recipient=plan.recipient,
        user_key=event.user_key,
        content=plan.content or event.content,
        accepted_at=event.created_at,
        user_id=event.user_id,
        category=event.category,
        priority=event.priority,
    )


def _step(
    event: NotificationRequested, plan: DeliveryPlan, step: str, at: datetime, detail: str | None
) -> journal.Step:
    return journal.Step(
        event.notification_id,
        step,
        at,
        delivery_id=plan.delivery_id,
        channel=plan.channel,
        detail=detail,
    )
