"""The router: turns an accepted notification into one delivery job per delivery.

It applies the user's preferences at sending time (a user may change them between the
request and its ``send_at``): a delivery the user opted out of is SKIPPED with the reason;
one that falls in quiet hours, or is scheduled, waits in the retry schedule until it is due
(never dropped); the rest are queued at once. Jobs go through the outbox, so routing a
notification twice (a redelivery after a crash) only produces duplicate jobs, which workers
recognise by the delivery's state.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.bus.base import Message, OutgoingMessage
from herald.bus.topics import Topics
from herald.clock import utcnow
from herald.domain.messages import (
    DeliveryJob,
    DeliveryPlan,
    DeliveryStatusChanged,
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
from herald.pipeline.unit import Units
from herald.store import deliveries, journal, recipient_caps, users
from herald.store.users import UserRecord

log = get_logger(__name__)


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
    ) -> None:
        self.units = units
        self.db = units.db
        self.topics = topics
        self.dead_letters = dead_letters
        self.retries = retries
        self.critical_categories = frozenset(critical_categories)
        self.daily_caps = dict(daily_caps or {})  # channel -> deliveries per recipient per day

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
        user = None
        if event.user_id is not None:
            async with self.db.read() as conn:
                user = await users.get(conn, event.tenant_id, event.user_id)
        prefs = _preferences(user)
        now = utcnow()
        start = max(now, event.send_at) if event.send_at else now
        critical = event.category in self.critical_categories
        trace = tracing.headers(traceparent)
        now_jobs: list[DeliveryJob] = []
        later: list[tuple[DeliveryJob, datetime]] = []
        skipped: list[tuple[DeliveryPlan, str]] = []
        steps = [
            # The bus stamps a message when it is appended: that is when it was published.
            journal.Step(event.notification_id, journal.PUBLISHED, message.timestamp),
        ]
        for plan in event.deliveries:
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
                skipped.append((plan, decision.reason or "preferences"))
                steps.append(_step(event, plan, journal.SKIPPED, now, decision.reason))
                continue
            job = _job(event, plan)
            due = decision.until if decision.action == "defer" else start
            if due is not None and due > now:
                later.append((job, due))
                why = decision.reason if decision.action == "defer" else "send_at"
                detail = f"{why} until {due.isoformat()}"
                steps.append(_step(event, plan, journal.DEFERRED, now, detail))
            else:
                now_jobs.append(job)
        async with self.units.begin() as unit:
            conn = unit.conn
            capped = await self._over_cap(conn, event, [*now_jobs, *(j for j, _ in later)], now)
            steps = [step for step in steps if step.delivery_id not in capped]
            for plan in (p for p in event.deliveries if p.delivery_id in capped):
                skipped.append((plan, "daily_cap"))
                steps.append(_step(event, plan, journal.SKIPPED, now, "daily_cap"))
            later = [(job, due) for job, due in later if job.delivery_id not in capped]
            jobs = [
                envelope(self.topics.deliveries(job.channel), event.user_key, job, trace)
                for job in now_jobs
                if job.delivery_id not in capped
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
                    jobs.append(self._skipped_event(event, plan, reason, now, trace))
            for job, due in later:
                await deliveries.defer(conn, job.delivery_id, due, now)
                self.retries.schedule(unit, job, due, trace)
            unit.publish(jobs)
            unit.record(steps)
        log.debug(
            "notification.routed",
            notification_id=event.notification_id,
            jobs=len(jobs),
            deferred=len(later),
            skipped=len(skipped),
            trace_id=tracing.trace_id(trace),
        )

    async def _over_cap(
        self,
        conn: AsyncConnection,
        event: NotificationRequested,
        jobs: list[DeliveryJob],
        now: datetime,
    ) -> set[str]:
        """The deliveries whose recipient already got the channel's daily cap today."""
        over = set()
        # In one order everywhere: admit() locks each address until commit, and two routers
        # locking the same two addresses in opposite orders would deadlock.
        for job in sorted(jobs, key=lambda j: (j.channel, j.recipient)):
            cap = self.daily_caps.get(job.channel)
            if cap is not None and not await recipient_caps.admit(
                conn,
                tenant=event.tenant_id,
                channel=job.channel,
                recipient=job.recipient,
                delivery_id=job.delivery_id,
                cap=cap,
                now=now,
            ):
                over.add(job.delivery_id)
                metrics.daily_cap_skips.labels(channel=job.channel).inc()
        return over

    def _skipped_event(
        self,
        event: NotificationRequested,
        plan: DeliveryPlan,
        reason: str,
        now: datetime,
        trace: dict[str, str],
    ) -> OutgoingMessage:
        status = DeliveryStatusChanged(
            notification_id=event.notification_id,
            delivery_id=plan.delivery_id,
            channel=plan.channel,
            user_key=event.user_key,
            status=DeliveryStatus.SKIPPED,
            attempts=0,
            error=reason,
            occurred_at=now,
        )
        return envelope(self.topics.status, event.user_key, status, trace)


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
