"""Notifications and their deliveries: rows in, records out."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from herald.domain.models import DeliveryStatus, NotificationStatus
from herald.domain.states import aggregate_status, leaving
from herald.ids import first_uuid7_at
from herald.records import record
from herald.store import journal
from herald.store.database import Connection
from herald.store.one_of import one_of
from herald.store.tables import deliveries, notifications


@record
class DeliveryRecord:
    id: str
    notification_id: str
    channel: str
    recipient: str
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    provider: str | None
    provider_message_id: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    last_attempt_at: datetime | None
    sent_at: datetime | None
    content: dict[str, Any] | None = None  # rendered Content; None: the notification's
    skip_reason: str | None = None


@record
class NotificationRecord:
    id: str
    tenant_id: str
    user_id: str | None
    recipient: str | None
    subject: str | None
    body: str
    status: NotificationStatus
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    category: str | None = None
    priority: str = "normal"
    template: str | None = None
    event_type: str | None = None
    send_at: datetime | None = None
    collapse_key: str | None = None
    deliveries: list[DeliveryRecord] = field(default_factory=list)


def _delivery(row: sa.Row[tuple[object, ...]]) -> DeliveryRecord:
    m = row._mapping
    return DeliveryRecord(
        id=m["id"],
        notification_id=m["notification_id"],
        channel=m["channel"],
        recipient=m["recipient"],
        status=DeliveryStatus(m["status"]),
        attempts=m["attempts"],
        last_error=m["last_error"],
        provider=m["provider"],
        provider_message_id=m["provider_message_id"],
        next_attempt_at=m["next_attempt_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        last_attempt_at=m["last_attempt_at"],
        sent_at=m["sent_at"],
        content=m["content"],
        skip_reason=m["skip_reason"],
    )


def _notification(
    row: sa.Row[tuple[object, ...]], delivery_records: list[DeliveryRecord]
) -> NotificationRecord:
    m = row._mapping
    return NotificationRecord(
        id=m["id"],
        tenant_id=m["tenant_id"],
        user_id=m["user_id"],
        recipient=m["recipient"],
        subject=m["subject"],
        body=m["body"],
        status=NotificationStatus(m["status"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        completed_at=m["completed_at"],
        category=m["category"],
        priority=m["priority"],
        template=m["template"],
        event_type=m["event_type"],
        send_at=m["send_at"],
        collapse_key=m["collapse_key"],
        deliveries=delivery_records,
    )


Rows = dict[sa.Table, list[dict[str, Any]]]


def rows_of(records: Sequence[NotificationRecord]) -> Rows:
    """The rows that store notifications and their deliveries, by table (notifications first,
    as deliveries refer to them)."""
    return {
        notifications: [
            {
                "id": r.id,
                "tenant_id": r.tenant_id,
                "user_id": r.user_id,
                "recipient": r.recipient,
                "subject": r.subject,
                "body": r.body,
                "status": r.status,
                "created_at": r.created_at,
                "updated_at": r.updated_at,
                "category": r.category,
                "priority": r.priority,
                "template": r.template,
                "event_type": r.event_type,
                "send_at": r.send_at,
                "collapse_key": r.collapse_key,
            }
            for r in records
        ],
        deliveries: [
            {
                "id": d.id,
                "notification_id": r.id,
                "channel": d.channel,
                "recipient": d.recipient,
                "status": d.status,
                "attempts": d.attempts,
                "next_attempt_at": d.next_attempt_at,
                "created_at": d.created_at,
                "updated_at": d.updated_at,
                "content": d.content,
            }
            for r in records
            for d in r.deliveries
        ],
    }


async def supersede(
    conn: Connection,
    tenant: str,
    user_key: str,
    collapse_key: str,
    *,
    by: str,
    now: datetime,
) -> list[journal.Step]:
    """A newer notification ``by`` replaces the undelivered ones with the same collapse key:
    their deliveries still PENDING are skipped, and a notification left with nothing sent or
    under way is CANCELLED. Returns the journal steps to record."""
    n = notifications.c
    older = (
        (
            await conn.execute(
                sa.select(n.id).where(
                    n.tenant_id == tenant,
                    n.collapse_key == collapse_key,
                    sa.func.coalesce(n.user_id, n.recipient) == user_key,
                    n.status.in_([NotificationStatus.PENDING, NotificationStatus.SCHEDULED]),
                )
            )
        )
        .scalars()
        .all()
    )
    if not older:
        return []
    await _skip_pending(conn, older, "superseded", now)
    return [journal.Step(i, journal.SUPERSEDED, now, detail=f"by {by}") for i in older]


class Cancelled(StrEnum):
    """What cancelling a notification did."""

    CANCELLED = "cancelled"
    NOT_FOUND = "not found"
    NOT_SCHEDULED = "not scheduled"  # sent, failed, cancelled, or never scheduled
    UNDER_WAY = "under way"  # it fell due and a delivery has started: too late


async def cancel(
    conn: Connection, tenant: str, notification_id: str, *, now: datetime
) -> Cancelled:
    """Cancel a SCHEDULED notification whose deliveries are all still PENDING: they are
    skipped ("cancelled") and it is CANCELLED, so nothing is sent when it falls due (a
    worker claims only PENDING deliveries). Its delivery rows are locked first (PostgreSQL;
    SQLite has one writer), so a worker claiming one meanwhile waits and then finds it
    skipped, or has claimed it already and nothing is changed (UNDER_WAY)."""
    n, d = notifications.c, deliveries.c
    status = await conn.scalar(
        sa.select(n.status).where(n.tenant_id == tenant, n.id == notification_id)
    )
    if status is None:
        return Cancelled.NOT_FOUND
    if status != NotificationStatus.SCHEDULED:
        return Cancelled.NOT_SCHEDULED
    statuses = sa.select(d.status).where(d.notification_id == notification_id)
    if conn.dialect.name != "sqlite":
        statuses = statuses.with_for_update()
    if any(s != DeliveryStatus.PENDING for s in (await conn.execute(statuses)).scalars()):
        return Cancelled.UNDER_WAY
    await _skip_pending(conn, [notification_id], "cancelled", now)
    step = journal.Step(notification_id, journal.CANCELLED, now, detail="by an operator")
    await journal.record(conn, [step])
    return Cancelled.CANCELLED


async def _skip_pending(
    conn: Connection, notification_ids: Sequence[str], reason: str, now: datetime
) -> None:
    """Skip these notifications' deliveries still PENDING; a notification left with nothing
    sent or under way is CANCELLED."""
    await conn.execute(
        sa.update(deliveries)
        .where(
            deliveries.c.notification_id.in_(notification_ids),
            deliveries.c.status == leaving(DeliveryStatus.PENDING, to=DeliveryStatus.SKIPPED),
        )
        .values(status=DeliveryStatus.SKIPPED, skip_reason=reason, updated_at=now)
    )
    n, d = notifications.c, deliveries.c
    nothing_left = ~sa.exists().where(d.notification_id == n.id, d.status != DeliveryStatus.SKIPPED)
    await conn.execute(
        sa.update(notifications)
        .where(n.id.in_(notification_ids), nothing_left)
        .values(status=NotificationStatus.CANCELLED, updated_at=now, completed_at=now)
    )


async def _deliveries_of(
    conn: Connection, notification_ids: Sequence[str]
) -> dict[str, list[DeliveryRecord]]:
    found: dict[str, list[DeliveryRecord]] = {n: [] for n in notification_ids}
    if notification_ids:
        rows = await conn.execute(
            sa.select(deliveries)
            .where(deliveries.c.notification_id.in_(notification_ids))
            .order_by(deliveries.c.notification_id, deliveries.c.id)
        )
        for row in rows:
            found[row.notification_id].append(_delivery(row))
    return found


async def get(conn: Connection, tenant: str, notification_id: str) -> NotificationRecord | None:
    """The notification with its deliveries. A change to its deliveries commits with its
    status, but a read is two statements here, each seeing what is committed when it runs: a
    change committed between them would show a status its deliveries do not explain (SENT
    beside a BOUNCED delivery). Such a pair is read again (twice at most)."""
    query = sa.select(notifications).where(
        notifications.c.tenant_id == tenant, notifications.c.id == notification_id
    )
    for _ in range(3):
        row = (await conn.execute(query)).first()
        if row is None:
            return None
        found = _notification(row, (await _deliveries_of(conn, [notification_id]))[notification_id])
        if found.status in _SET_APART or found.status == aggregate_status(
            d.status for d in found.deliveries
        ):
            break
    return found


# Statuses not made from the deliveries' (by a schedule, a cancellation, a user's deletion).
_SET_APART = frozenset({NotificationStatus.SCHEDULED, NotificationStatus.CANCELLED})


async def list_page(
    conn: Connection,
    tenant: str,
    *,
    limit: int,
    before_id: str | None = None,
    status: NotificationStatus | None = None,
    recipient: str | None = None,
    user_id: str | None = None,
    channel: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[NotificationRecord]:
    """Newest first (ids are time-ordered); ``before_id`` continues after a previous page.
    ``channel``: with a delivery on it; ``since``/``until``: accepted in ``[since, until)``
    (a range of ids: UUIDv7 begin with their time)."""
    n = notifications.c
    query = sa.select(notifications).where(n.tenant_id == tenant).order_by(n.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(n.id < before_id)
    if status is not None:
        query = query.where(n.status == status)
    if recipient is not None:
        query = query.where(n.recipient == recipient)
    if user_id is not None:
        query = query.where(n.user_id == user_id)
    if channel is not None:
        on = sa.select(deliveries.c.id).where(
            deliveries.c.notification_id == n.id, deliveries.c.channel == channel
        )
        query = query.where(on.exists())
    if since is not None:
        query = query.where(n.id >= first_uuid7_at(since))
    if until is not None:
        query = query.where(n.id < first_uuid7_at(until))
    rows = (await conn.execute(query)).all()
    by_id = await _deliveries_of(conn, [r.id for r in rows])
    return [_notification(r, by_id[r.id]) for r in rows]


_DELIVERY_STATUSES = sa.select(deliveries.c.notification_id, deliveries.c.status).where(
    one_of(deliveries.c.notification_id, "ids")
)


async def delivery_statuses_of(
    conn: Connection, notification_ids: Collection[str]
) -> dict[str, list[DeliveryStatus]]:
    """Each notification's delivery statuses, in one query."""
    found: dict[str, list[DeliveryStatus]] = {i: [] for i in notification_ids}
    if found:
        rows = await conn.execute(_DELIVERY_STATUSES, {"ids": list(found)})
        for notification_id, status in rows:
            found[notification_id].append(DeliveryStatus(status))
    return found


_SET_STATUS = (
    sa.update(notifications)
    .where(
        one_of(notifications.c.id, "ids"),
        notifications.c.status != sa.bindparam("new_status", type_=sa.String),
        # Cancelled by a newer notification: nothing of it is left to change.
        notifications.c.status != NotificationStatus.CANCELLED,
    )
    .values(
        status=sa.bindparam("new_status", type_=sa.String),
        updated_at=sa.bindparam("now", type_=notifications.c.updated_at.type),
        completed_at=sa.bindparam("completed", type_=notifications.c.completed_at.type),
    )
    .returning(notifications.c.id)
)


async def set_statuses(
    conn: Connection, statuses: Mapping[str, NotificationStatus], now: datetime
) -> list[str]:
    """Store new statuses, one statement per distinct status; the ids that changed."""
    by_status: dict[NotificationStatus, list[str]] = {}
    for notification_id, status in statuses.items():
        by_status.setdefault(status, []).append(notification_id)
    changed: list[str] = []
    for status, ids in by_status.items():
        completed_at = None if status == NotificationStatus.PENDING else now
        values = {"ids": ids, "new_status": status, "now": now, "completed": completed_at}
        changed += (await conn.execute(_SET_STATUS, values)).scalars().all()
    return changed


_LOCK = (
    sa.select(notifications.c.id)
    .where(one_of(notifications.c.id, "ids"))
    .order_by(notifications.c.id)
    # NO KEY UPDATE, as an UPDATE of the status takes: a row that refers to the notification
    # (its deliveries' key share) does not wait for it, nor it for such a row.
    .with_for_update(key_share=True)
)


async def lock(conn: Connection, notification_ids: Collection[str]) -> None:
    """Take these notifications' rows for the rest of the transaction, in id order (as
    ``settle`` does: see it). SQLite has one writer at a time: nothing to take."""
    ids = sorted(set(notification_ids))
    if ids and conn.dialect.name != "sqlite":
        await conn.execute(_LOCK, {"ids": ids})


@dataclass(frozen=True, slots=True)
class Owner:
    tenant_id: str
    user_id: str | None


async def owners(conn: Connection, notification_ids: Collection[str]) -> dict[str, Owner]:
    """Whose each notification is."""
    N = notifications.c
    rows = await conn.execute(
        sa.select(N.id, N.tenant_id, N.user_id).where(one_of(N.id, "ids")),
        {"ids": sorted(set(notification_ids))},
    )
    return {r.id: Owner(r.tenant_id, r.user_id) for r in rows}


async def settle(
    conn: Connection, notification_ids: Collection[str], now: datetime
) -> dict[str, NotificationStatus]:
    """Bring each notification's status in step with its deliveries, in the transaction that
    changed them; the statuses that changed.

    Two transactions changing deliveries of one notification (its email and its SMS, recorded
    by two workers) take turns on its row here: the second reads the deliveries only once the
    first has committed (READ COMMITTED reads afresh at each statement), so neither leaves a
    status that the other's change made stale. Every writer changes delivery rows before it
    settles, and takes the notification rows in id order, so the turns cannot deadlock.
    SQLite has one writer at a time: nothing to take turns on."""
    ids = sorted(set(notification_ids))
    if not ids:
        return {}
    await lock(conn, ids)
    found = await delivery_statuses_of(conn, ids)
    statuses = {i: aggregate_status(s) for i, s in found.items()}
    changed = await set_statuses(conn, statuses, now)
    return {i: statuses[i] for i in changed}


async def pending_but_finished(conn: Connection, *, limit: int) -> list[str]:
    """PENDING notifications none of whose deliveries is still in progress."""
    in_progress = (
        sa.select(deliveries.c.id)
        .where(
            deliveries.c.notification_id == notifications.c.id,
            deliveries.c.status.in_(
                [DeliveryStatus.PENDING, DeliveryStatus.PROCESSING, DeliveryStatus.RETRY_PENDING]
            ),
        )
        .exists()
    )
    rows = await conn.execute(
        sa.select(notifications.c.id)
        .where(notifications.c.status == NotificationStatus.PENDING, ~in_progress)
        .limit(limit)
    )
    return [r.id for r in rows]
