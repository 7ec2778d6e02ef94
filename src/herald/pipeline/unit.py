"""The unit of work: one database transaction and everything a stage publishes and records in
it, written together at commit, and whoever waits for it woken after the commit.

    async with units.begin() as unit:
        ...state changes on unit.conn...
        unit.publish([job, status_event])          # to the bus, with the state change
        unit.publish([retry], available_at=due)    # later: through the outbox
        unit.record([journal step, ...])
        unit.insert({table: [row, ...]})             # new rows, written at commit
        unit.settle([notification_id, ...])         # deliveries changed: status follows
        unit.changed(DeliveryChange(...))           # a delivery's new status, to announce

What a stage publishes for now goes where the bus lets it join the transaction: on the
embedded bus (a log in the same database) it is appended to the log itself, so no relay hop
and no second write; on Kafka, which cannot join a database transaction, into the outbox, for
the relay. What is due later always goes to the outbox, whose relay publishes it when due.
Buffered rows are written with one multi-row statement per table (so the writes of a group
commit, each inserting a notification, make one statement between them), PostgreSQL's ``NOTIFY``
(waking relays in other processes) is sent once per transaction, and this process's waiting
relay and consumers are woken only once the transaction has committed: never for something
that rolled back. A notification whose deliveries the unit changed has its status brought in
step last, in the same transaction (see ``notifications.settle``): no status event to wait for.
Then the status events of those changes that tenants' webhooks subscribe to are made, in the
same transaction too (see pipeline/status_webhooks).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from herald.bus.base import Bus, OutgoingMessage
from herald.clock import utcnow
from herald.domain.models import DeliveryStatus, NotificationStatus
from herald.observability import metrics
from herald.observability.logging import get_logger
from herald.store import journal, notifications, outbox
from herald.store.bulk_insert import insert_many, insert_rows
from herald.store.database import Connection, Database
from herald.store.tables import notification_events, outbox_events
from herald.wakeup import Wakeup

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DeliveryChange:
    """A delivery's status changed in a unit: what its status event says."""

    tenant_id: str
    notification_id: str
    delivery_id: str
    channel: str
    status: DeliveryStatus
    attempts: int
    error: str | None


class Unit:
    """What a stage writes in one transaction (see the module docstring)."""

    def __init__(self, conn: Connection, now: datetime) -> None:
        self.conn = conn
        self.now = now
        self.messages: list[OutgoingMessage] = []  # to publish now
        self.later: list[tuple[OutgoingMessage, datetime]] = []  # to publish when due
        self.steps: list[journal.Step] = []
        self.rows: dict[sa.Table, list[dict[str, Any]]] = {}  # to insert, by table
        self.unsettled: set[str] = set()  # notifications whose deliveries changed
        self.settled: dict[str, NotificationStatus] = {}  # their new statuses, once written
        self.changes: list[DeliveryChange] = []  # deliveries' new statuses, to announce
        self.outbox_woken = False  # the relay's process has work not in the outbox
        # Publish through the outbox even where the bus could take it in the transaction:
        # for a unit that locks notifications first (the embedded log's partitions are taken
        # by everyone else before the notifications, so taking them after would deadlock).
        self.via_outbox = False

    def insert(self, rows: dict[sa.Table, list[dict[str, Any]]]) -> None:
        """Buffer new rows; tables are written in the order first given (a row referring to
        another's comes after it)."""
        for table, more in rows.items():
            self.rows.setdefault(table, []).extend(more)

    async def write_rows(self) -> None:
        """Write the buffered rows now: before reading what they would change."""
        for table, rows in self.rows.items():
            await insert_rows(self.conn, table, rows)
        self.rows = {}

    def publish(
        self, messages: Iterable[OutgoingMessage], *, available_at: datetime | None = None
    ) -> None:
        if available_at is None or available_at <= self.now:
            self.messages.extend(messages)
        else:
            self.later.extend((m, available_at) for m in messages)

    def record(self, steps: Iterable[journal.Step]) -> None:
        self.steps.extend(steps)

    def wake_outbox(self) -> None:
        """Wake the relay's process after commit (and on PostgreSQL, every relay's) for
        something written beside the outbox: a staged batch, for the expander."""
        self.outbox_woken = True

    def settle(self, notification_ids: Iterable[str]) -> None:
        """These notifications' deliveries changed: their statuses follow at commit."""
        self.unsettled.update(notification_ids)

    def changed(self, change: DeliveryChange) -> None:
        """A delivery's status changed (its notification is settled too, by the caller)."""
        self.changes.append(change)


#: Makes the status events a unit's changes announce (pipeline/status_webhooks): writes
#: them in the unit's transaction and returns the jobs to publish with it.
Announce = Callable[[Unit], Awaitable[list[OutgoingMessage]]]


class Units:
    """Begins units of work on ``db``, publishing to ``bus`` (see the module docstring); with
    no bus, or one that cannot join a transaction, everything goes through the outbox."""

    def __init__(self, db: Database, outbox_wakeup: Wakeup, bus: Bus | None = None) -> None:
        self.db = db
        self.outbox_wakeup = outbox_wakeup
        self.bus = bus
        self.announce: Announce | None = None  # set once status webhooks are wired

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[Unit]:
        async with self.db.write() as conn:
            unit = Unit(conn, utcnow())
            yield unit
            appended = await self._flush(unit)
        # Committed: wake whoever waits for what it wrote.
        for notification_id, status in unit.settled.items():
            log.info("notification.status", notification_id=notification_id, status=status)
        if appended and self.bus is not None:
            self.bus.after_commit(appended)
            count_published(m.topic for m in unit.messages)
        if unit.later or (unit.messages and not appended) or unit.outbox_woken:
            self.outbox_wakeup.notify()

    async def _flush(self, unit: Unit) -> set[str]:
        """Write what ``unit`` buffered; the topics appended to the bus directly. The rows go
        in one statement where the database can (PostgreSQL: see ``insert_many``)."""
        conn, appended = unit.conn, set[str]()
        queued: list[tuple[OutgoingMessage, datetime | None]] = [(m, due) for m, due in unit.later]
        if (
            unit.messages
            and self.bus is not None
            and self.bus.transactional
            and not unit.via_outbox
        ):
            await unit.write_rows()  # before the log's rows, which may refer to them
            await self.bus.publish_in(conn, unit.messages)
            appended = {m.topic for m in unit.messages}
        else:
            queued += [(m, None) for m in unit.messages]
        batches = [*unit.rows.items()]
        unit.rows = {}
        if queued:
            batches.append((outbox_events, outbox.rows(queued, unit.now)))
        batches.append((notification_events, journal.rows(unit.steps)))
        notify = queued or unit.outbox_woken
        await insert_many(conn, batches, notify=outbox.notify(conn) if notify else None)
        # Last: the notification rows are taken after every delivery row (see settle).
        unit.settled = await notifications.settle(conn, unit.unsettled, unit.now)
        if self.announce is not None and (unit.changes or unit.settled):
            appended |= await self._publish_late(unit, await self.announce(unit))
        return appended

    async def _publish_late(self, unit: Unit, messages: list[OutgoingMessage]) -> set[str]:
        """Publish what was made after the rest was written (the status events' jobs): on
        the log, or through the outbox. The topics appended to the bus directly."""
        if not messages:
            return set()
        unit.messages.extend(messages)  # counted and woken for after the commit
        conn = unit.conn
        if self.bus is not None and self.bus.transactional and not unit.via_outbox:
            await self.bus.publish_in(conn, messages)
            return {m.topic for m in messages}
        rows = outbox.rows([(m, None) for m in messages], unit.now)
        await insert_many(conn, [(outbox_events, rows)], notify=outbox.notify(conn))
        return set()


def count_published(topics: Iterable[str]) -> None:
    """herald_events_published_total: one per message, by its topic."""
    for topic, count in Counter(topics).items():
        metrics.events_published.labels(topic).inc(count)
