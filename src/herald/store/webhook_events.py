"""Status events on their way to a subscription's URL (see pipeline/stages/announce).

An event is PENDING (its job is on the bus), PROCESSING (an attempt under way, under a
lease), RETRY_PENDING (its next attempt's job is due at ``next_attempt_at``), SENT or
DEAD_LETTERED. Events of one subscription about one notification go out one at a time, in
the order they happened: an event made while an earlier one of its chain is unfinished is
WAITING ``after`` the chain's last; when that one ends (sent or dead-lettered) it becomes
PENDING and its job goes out, in the transaction that ended its predecessor. Both sides lock
the notification's row first (``notifications.lock``), so an event is never made after a
predecessor that ended unseen.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from herald.ids import first_uuid7_at
from herald.store.database import Connection, Database
from herald.store.one_of import one_of
from herald.store.purge import delete_in_chunks
from herald.store.tables import webhook_events, webhook_subscriptions

E = webhook_events.c
S = webhook_subscriptions.c

WAITING = "WAITING"
PENDING = "PENDING"
PROCESSING = "PROCESSING"
RETRY_PENDING = "RETRY_PENDING"
SENT = "SENT"
DEAD_LETTERED = "DEAD_LETTERED"
ENDED = (SENT, DEAD_LETTERED)


@dataclass(frozen=True, slots=True)
class NewEvent:
    id: str
    tenant_id: str
    subscription_id: str
    notification_id: str
    type: str
    data: str  # JSON
    after_id: str | None  # the unfinished event of its chain it waits for, if any

    def row(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "subscription_id": self.subscription_id,
            "notification_id": self.notification_id,
            "type": self.type,
            "data": self.data,
            "status": PENDING if self.after_id is None else WAITING,
            "after_id": self.after_id,
            "attempts": 0,
            "next_attempt_at": None,
            "lease_until": None,
            "last_error": None,
            "created_at": now,
            "updated_at": now,
        }


@dataclass(frozen=True, slots=True)
class Event:
    """An event as the sender reads it, with where it goes."""

    id: str
    tenant_id: str
    subscription_id: str
    notification_id: str
    type: str
    data: str
    status: str
    attempts: int
    lease_until: datetime | None
    created_at: datetime
    url: str | None  # None: the subscription is gone


async def tails(conn: Connection, notification_ids: Collection[str]) -> dict[tuple[str, str], str]:
    """The last unfinished event of each chain (subscription, notification) of these
    notifications: the one a new event of the chain waits after."""
    later = webhook_events.alias("later")
    rows = await conn.execute(
        sa.select(E.id, E.subscription_id, E.notification_id).where(
            one_of(E.notification_id, "ids"),
            E.status.not_in(ENDED),
            ~sa.select(later.c.id).where(later.c.after_id == E.id).exists(),
        ),
        {"ids": sorted(set(notification_ids))},
    )
    return {(r.subscription_id, r.notification_id): r.id for r in rows}


_SELECT = sa.select(
    E.id,
    E.tenant_id,
    E.subscription_id,
    E.notification_id,
    E.type,
    E.data,
    E.status,
    E.attempts,
    E.lease_until,
    E.created_at,
    S.url,
).select_from(webhook_events.outerjoin(webhook_subscriptions, S.id == E.subscription_id))


def _event(row: sa.Row[Any]) -> Event:
    return Event(
        row.id,
        row.tenant_id,
        row.subscription_id,
        row.notification_id,
        row.type,
        row.data,
        row.status,
        row.attempts,
        row.lease_until,
        row.created_at,
        row.url,
    )


async def get_many(conn: Connection, ids: Collection[str], *, lock: bool = False) -> list[Event]:
    """The events with these ids (locked for update, in id order: ``lock``)."""
    query = _SELECT.where(one_of(E.id, "ids")).order_by(E.id)
    if lock and conn.dialect.name != "sqlite":
        query = query.with_for_update(of=webhook_events)
    return [_event(r) for r in await conn.execute(query, {"ids": sorted(set(ids))})]


async def start(
    conn: Connection, ids: Collection[str], *, lease_until: datetime, now: datetime
) -> None:
    """An attempt of each begins: PROCESSING under a lease, one more attempt counted."""
    await conn.execute(
        sa.update(webhook_events)
        .where(one_of(E.id, "ids"))
        .values(
            status=PROCESSING,
            attempts=E.attempts + 1,
            lease_until=lease_until,
            next_attempt_at=None,
            updated_at=now,
        ),
        {"ids": sorted(set(ids))},
    )


async def finish(
    conn: Connection,
    event_id: str,
    *,
    attempt: int,
    status: str,
    now: datetime,
    error: str | None = None,
    next_attempt_at: datetime | None = None,
) -> bool:
    """End attempt ``attempt`` (False if it is no longer this attempt's to end)."""
    result = await conn.execute(
        sa.update(webhook_events)
        .where(E.id == event_id, E.status == PROCESSING, E.attempts == attempt)
        .values(
            status=status,
            last_error=error,
            next_attempt_at=next_attempt_at,
            lease_until=None,
            updated_at=now,
        )
    )
    return bool(result.rowcount)


async def put_off(conn: Connection, event_id: str, *, due: datetime, now: datetime) -> None:
    """Its destination is resting (an open circuit): its job comes back at ``due``, no
    attempt counted."""
    await conn.execute(
        sa.update(webhook_events)
        .where(E.id == event_id, E.status.in_((PENDING, RETRY_PENDING)))
        .values(status=RETRY_PENDING, next_attempt_at=due, updated_at=now)
    )


async def release(
    conn: Connection, ended: Iterable[str], now: datetime
) -> list[tuple[str, str, str]]:
    """The events waiting after these (now ended) become PENDING: (id, tenant, notification)
    of each, whose jobs the caller publishes."""
    ids = sorted(set(ended))
    if not ids:
        return []
    rows = await conn.execute(
        sa.update(webhook_events)
        .where(one_of(E.after_id, "ids"), E.status == WAITING)
        .values(status=PENDING, updated_at=now)
        .returning(E.id, E.tenant_id, E.notification_id),
        {"ids": ids},
    )
    return [(r.id, r.tenant_id, r.notification_id) for r in rows]


async def reopen(conn: Connection, event_id: str, now: datetime) -> bool:
    """A dead-lettered event goes out again (a replay): PENDING, a fresh attempt budget."""
    result = await conn.execute(
        sa.update(webhook_events)
        .where(E.id == event_id, E.status == DEAD_LETTERED)
        .values(status=PENDING, attempts=0, last_error=None, updated_at=now)
    )
    return bool(result.rowcount)


async def forget_subscription(conn: Connection, subscription_id: str) -> list[str]:
    """A subscription is deleted: its events go with it, those unfinished never sent (a job
    of one still on the bus finds nothing to send)."""
    mine = E.subscription_id == subscription_id
    if conn.dialect.name != "sqlite":  # in id order, as the sender takes them
        await conn.execute(sa.select(E.id).where(mine).order_by(E.id).with_for_update())
    rows = await conn.execute(sa.delete(webhook_events).where(mine).returning(E.id))
    return [r.id for r in rows]


async def forget_subscriptions(conn: Connection, subscription_ids: Collection[str]) -> None:
    """Events of subscriptions that are gone (made by a process that had not heard yet),
    those waiting in their chains too."""
    for subscription_id in sorted(set(subscription_ids)):
        await forget_subscription(conn, subscription_id)


@dataclass(frozen=True, slots=True)
class Stuck:
    """An event whose job the bus seems to have lost, and the attempt its new job is for."""

    id: str
    tenant_id: str
    notification_id: str
    attempt: int


async def stuck(conn: Connection, *, before: datetime, now: datetime, limit: int) -> list[Stuck]:
    """Events that should have moved long ago (see pipeline/operations/recovery): queued
    since before ``before``, a retry overdue since then, an attempt whose lease lapsed then,
    or one waiting after an event that has ended or is gone (then it is queued now). Each is
    marked as seen now, so the next sweep leaves it alone for a while."""
    query = (
        sa.select(E.id, E.tenant_id, E.notification_id, E.status, E.attempts, E.after_id)
        .where(
            E.status.not_in(ENDED),
            E.updated_at < before,
            sa.or_(E.next_attempt_at.is_(None), E.next_attempt_at < before),
            sa.or_(E.lease_until.is_(None), E.lease_until < before),
        )
        .order_by(E.updated_at)
        .limit(limit)
    )
    if conn.dialect.name != "sqlite":  # not one a sender is claiming this moment
        query = query.with_for_update(skip_locked=True)
    rows = (await conn.execute(query)).all()
    waiting = [r for r in rows if r.status == WAITING]
    alive = set()
    if waiting:
        found = await conn.execute(
            sa.select(E.id).where(one_of(E.id, "ids"), E.status.not_in(ENDED)),
            {"ids": sorted({r.after_id for r in waiting})},
        )
        alive = {r.id for r in found}
    lost = [
        Stuck(r.id, r.tenant_id, r.notification_id, r.attempts - (r.status == PROCESSING))
        for r in rows
        if r.status != WAITING or r.after_id not in alive
    ]
    if lost:
        await conn.execute(
            sa.update(webhook_events)
            .where(one_of(E.id, "ids"), E.status == WAITING)
            .values(status=PENDING),
            {"ids": sorted(e.id for e in lost)},
        )
    if rows:  # those still waiting rightly too: looked at again only after a while
        await conn.execute(
            sa.update(webhook_events).where(one_of(E.id, "ids")).values(updated_at=now),
            {"ids": sorted(r.id for r in rows)},
        )
    return lost


async def purge_sent(db: Database, made_before: datetime) -> int:
    """Delete the events posted that were made before ``made_before`` (ids are time-ordered:
    a range of the primary key), a chunk per transaction; how many."""
    old = sa.and_(E.id < first_uuid7_at(made_before), E.status == SENT)
    return await delete_in_chunks(db, webhook_events, old)


async def of_notification(conn: Connection, notification_id: str) -> list[Event]:
    """A notification's events, oldest first."""
    rows = await conn.execute(
        _SELECT.where(E.notification_id == notification_id).order_by(E.created_at, E.id)
    )
    return [_event(r) for r in rows]
