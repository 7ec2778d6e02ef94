"""Status events for tenants' webhook subscriptions, made where the status changes.

A unit of work that changed deliveries (and so settled their notifications) ends by asking
``Announcer.announce``: for every change some subscription of its tenant wants
(domain/status_events), one event row per subscription, written in that same transaction with
the job that posts it (pipeline/stages/announce). So an event is made exactly when its change
commits: never for a change rolled back, never lost for one committed.

The subscriptions are kept in memory and read again every ``SUBSCRIPTIONS_TTL`` seconds (at
once in the process that changed them): a unit of a tenant without subscriptions costs no
query, and a subscription made or deleted reaches every process within that time.

Order: a subscription's events about one notification are a chain; the event made while an
earlier one is unfinished waits for it (store/webhook_events). The notification's row is
locked by the settle that came first, so two units never extend one chain at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from herald.bus.base import OutgoingMessage
from herald.bus.topics import Topics
from herald.domain import status_events
from herald.domain.messages import StatusWebhookJob
from herald.ids import uuid7
from herald.observability import metrics
from herald.pipeline.envelope import envelope
from herald.pipeline.unit import Unit
from herald.store import notifications, tables, webhook_events, webhook_subscriptions
from herald.store.database import Connection
from herald.store.webhook_events import NewEvent
from herald.store.webhook_subscriptions import Subscription

SUBSCRIPTIONS_TTL = 2.0


@dataclass(frozen=True, slots=True)
class Subscribed:
    """Every tenant's subscriptions as read at one time, and what they want."""

    by_tenant: Mapping[str, list[Subscription]]
    wanted: frozenset[tuple[str, str]]  # (tenant, event type) some subscription wants
    tenants_wanting_notifications: frozenset[str]

    @classmethod
    def of(cls, subscriptions: Sequence[Subscription]) -> Subscribed:
        by_tenant: dict[str, list[Subscription]] = {}
        wanted: set[tuple[str, str]] = set()
        for s in subscriptions:
            by_tenant.setdefault(s.tenant_id, []).append(s)
            names = status_events.EVENT_TYPES if status_events.ALL in s.events else s.events
            wanted.update((s.tenant_id, name) for name in names)
        notifying = {tenant for tenant, name in wanted if name.startswith("notification.")}
        return cls(by_tenant, frozenset(wanted), frozenset(notifying))


class Subscriptions:
    """Every tenant's subscriptions, read again when older than ``ttl`` seconds."""

    def __init__(self, ttl: float = SUBSCRIPTIONS_TTL) -> None:
        self.ttl = ttl
        self._current = Subscribed.of([])
        self._read_at: float | None = None

    def forget(self) -> None:
        """Read them again next time (this process changed them)."""
        self._read_at = None

    async def current(self, conn: Connection) -> Subscribed:
        now = time.monotonic()
        if self._read_at is None or now - self._read_at > self.ttl:
            self._current = Subscribed.of(await webhook_subscriptions.every(conn))
            self._read_at = now
        return self._current


@dataclass(frozen=True, slots=True)
class _Happened:
    tenant_id: str
    notification_id: str
    type: str
    data: Mapping[str, object]


def status_webhook_job(
    topics: Topics, event_id: str, tenant: str, notification_id: str, attempt: int = 0
) -> OutgoingMessage:
    """The message that has an event posted (keyed by its notification)."""
    job = StatusWebhookJob(
        event_id=event_id, tenant_id=tenant, notification_id=notification_id, attempt=attempt
    )
    return envelope(topics.status_webhooks, notification_id, job)


class Announcer:
    def __init__(self, topics: Topics, subscriptions: Subscriptions) -> None:
        self.topics = topics
        self.subscriptions = subscriptions

    async def announce(self, unit: Unit) -> list[OutgoingMessage]:
        """Write the events ``unit``'s changes make; the jobs of those that may go now."""
        subscribed = await self.subscriptions.current(unit.conn)
        if not subscribed.wanted:
            return []
        happened = await self._happened(unit, subscribed)
        if not happened:
            return []
        tails = await webhook_events.tails(unit.conn, {h.notification_id for h in happened})
        made: list[NewEvent] = []
        for h in happened:  # in the order they happened: each after the one before
            for subscription in subscribed.by_tenant[h.tenant_id]:
                if not status_events.wants(subscription.events, h.type):
                    continue
                chain = (subscription.id, h.notification_id)
                event = NewEvent(
                    id=uuid7(),
                    tenant_id=h.tenant_id,
                    subscription_id=subscription.id,
                    notification_id=h.notification_id,
                    type=h.type,
                    data=json.dumps(h.data, separators=(",", ":"), sort_keys=True),
                    after_id=tails.get(chain),
                )
                tails[chain] = event.id
                made.append(event)
        if not made:
            return []
        unit.insert({tables.webhook_events: [e.row(unit.now) for e in made]})
        await unit.write_rows()
        metrics.status_webhook_events.inc(len(made))
        return [self.job(e.id, e.tenant_id, e.notification_id) for e in made if e.after_id is None]

    def job(
        self, event_id: str, tenant: str, notification_id: str, attempt: int = 0
    ) -> OutgoingMessage:
        return status_webhook_job(self.topics, event_id, tenant, notification_id, attempt)

    async def _happened(self, unit: Unit, subscribed: Subscribed) -> list[_Happened]:
        """What ``unit`` changed that some subscription of its tenant wants: each delivery's
        change, then each notification's new status. Whose a notification is comes from its
        deliveries' changes, else (a settle without one here: a sweep's) from its row, read
        only if some tenant wants notification events."""
        wanted = subscribed.wanted
        changes = [
            (c, kind)
            for c in unit.changes
            if (kind := status_events.DELIVERY_EVENTS.get(c.status)) is not None
            and (c.tenant_id, kind) in wanted
        ]
        tenant_of = {c.notification_id: c.tenant_id for c in unit.changes}
        settled = {
            notification_id: kind
            for notification_id, status in unit.settled.items()
            if (kind := status_events.NOTIFICATION_EVENTS.get(status)) is not None
            and (
                (tenant_of[notification_id], kind) in wanted
                if notification_id in tenant_of
                else bool(subscribed.tenants_wanting_notifications)
            )
        }
        if not changes and not settled:
            return []
        owners = await notifications.owners(
            unit.conn, {c.notification_id for c, _ in changes} | settled.keys()
        )
        happened: list[_Happened] = []
        for c, kind in changes:
            owner = owners.get(c.notification_id)
            if owner is None or owner.tenant_id != c.tenant_id:
                continue  # only ever the notification's own tenant's (an old job: no tenant)
            data = {
                "notification_id": c.notification_id,
                "delivery_id": c.delivery_id,
                "channel": c.channel,
                "status": c.status.value,
                "attempts": c.attempts,
                "error": c.error,
                "user_id": owner.user_id,
            }
            happened.append(_Happened(c.tenant_id, c.notification_id, kind, data))
        for notification_id, kind in sorted(settled.items()):
            owner = owners.get(notification_id)
            if owner is None or (owner.tenant_id, kind) not in wanted:
                continue
            data = {
                "notification_id": notification_id,
                "status": unit.settled[notification_id].value,
                "user_id": owner.user_id,
            }
            happened.append(_Happened(owner.tenant_id, notification_id, kind, data))
        return happened
