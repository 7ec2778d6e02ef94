"""Delivery state changes, each guarded so that only the current attempt's owner can make it.

An attempt starts with ``claim``: PENDING, a due retry, or a PROCESSING delivery whose lease
has lapsed (its worker died) becomes PROCESSING with ``attempts + 1``. A worker process also
takes back at once what it holds itself: after it failed to record an outcome (the database
went away mid-attempt), it need not wait out its own lease. Finishing an attempt
(``finish``) only succeeds while the delivery is still PROCESSING at that attempt number, so a
worker whose lease was taken over cannot overwrite its successor's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from herald.domain.models import DeliveryStatus
from herald.domain.states import leaving, moving
from herald.store.bulk_insert import insert_rows
from herald.store.database import Connection
from herald.store.one_of import one_of
from herald.store.tables import deliveries, delivery_attempts, notifications

D = deliveries.c
SKIPPED = DeliveryStatus.SKIPPED
NOT_DUE_SLACK = timedelta(seconds=5)


class ClaimOutcome(StrEnum):
    CLAIMED = "claimed"  # this worker now owns the attempt
    FINISHED = "finished"  # nothing left to do (SENT, FAILED, SKIPPED, ...)
    BUSY = "busy"  # another worker holds a live lease
    STALE = "stale"  # a duplicate of a job that a later retry has replaced
    NOT_DUE = "not_due"  # deferred until later; the job scheduled for then will come
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: ClaimOutcome
    attempts: int = 0
    status: DeliveryStatus | None = None
    lease_until: datetime | None = None


def _claimable(
    job_attempt: sa.ColumnElement[int],
    now: sa.ColumnElement[datetime],
    due_by: sa.ColumnElement[datetime],  # now + NOT_DUE_SLACK
    owner: sa.ColumnElement[str],
) -> sa.ColumnElement[bool]:
    due = sa.or_(D.next_attempt_at.is_(None), D.next_attempt_at <= due_by)
    return sa.or_(
        # A deferred delivery (quiet hours, send_at) only once due; its scheduled job comes
        # then, so an early duplicate is dropped. The slack absorbs clocks a little apart.
        sa.and_(D.status == leaving(DeliveryStatus.PENDING, to=DeliveryStatus.PROCESSING), due),
        # Only the job scheduled for this retry may start it, once due; older duplicates are
        # stale, and an early one has its own job coming (a destination's circuit postponed it).
        sa.and_(
            D.status == leaving(DeliveryStatus.RETRY_PENDING, to=DeliveryStatus.PROCESSING),
            D.attempts == job_attempt,
            due,
        ),
        sa.and_(
            D.status == leaving(DeliveryStatus.PROCESSING, to=DeliveryStatus.PROCESSING),
            sa.or_(D.lease_until < now, D.lease_owner == owner),
        ),
    )


# Built once: a statement object reused keeps its compiled form and cache key.
_CLAIM = (
    sa.update(deliveries)
    # A skip reason on a delivery not yet SKIPPED: cancelled while under way (its user was
    # deleted). It is never started again; below, it becomes SKIPPED instead.
    .where(
        one_of(D.id, "ids"),
        D.skip_reason.is_(None),
        _claimable(
            sa.bindparam("job_attempt", type_=sa.Integer),
            sa.bindparam("now", type_=D.updated_at.type),
            sa.bindparam("due_by", type_=D.updated_at.type),
            sa.bindparam("owner", type_=sa.String),
        ),
    )
    .values(
        status=DeliveryStatus.PROCESSING,
        attempts=D.attempts + 1,
        lease_until=sa.bindparam("lease_until", type_=D.lease_until.type),
        lease_owner=sa.bindparam("owner", type_=sa.String),
        last_attempt_at=sa.bindparam("now", type_=D.updated_at.type),
        next_attempt_at=None,
        updated_at=sa.bindparam("now", type_=D.updated_at.type),
    )
    .returning(D.id, D.attempts)
)
_CLAIM_MISSED = sa.select(D.id, D.status, D.attempts, D.lease_until, D.skip_reason).where(
    one_of(D.id, "ids")
)
_MISSED = {
    DeliveryStatus.PROCESSING: ClaimOutcome.BUSY,
    DeliveryStatus.RETRY_PENDING: ClaimOutcome.STALE,
    DeliveryStatus.PENDING: ClaimOutcome.NOT_DUE,
}


async def claim(
    conn: Connection,
    delivery_id: str,
    *,
    job_attempt: int,
    now: datetime,
    lease_until: datetime,
    owner: str,
) -> Claim:
    """Start an attempt. ``job_attempt`` is the attempt count the job was scheduled at."""
    (found,) = await claim_many(
        conn, [(delivery_id, job_attempt)], now=now, lease_until=lease_until, owner=owner
    )
    return found


async def claim_many(
    conn: Connection,
    jobs: list[tuple[str, int]],
    *,
    now: datetime,
    lease_until: datetime,
    owner: str,
) -> list[Claim]:
    """Start the attempts of many jobs, ``(delivery id, attempt count it was scheduled at)``:
    one statement per distinct attempt count (usually one), one more to look at what could
    not be started. A delivery's later job in the list is tried once its earlier one has
    been; it finds the delivery busy if that one claimed it (never two sends at once)."""
    claims: list[Claim] = [Claim(ClaimOutcome.MISSING)] * len(jobs)
    claimed: set[str] = set()
    waiting = list(enumerate(jobs))
    while waiting:
        seen: set[str] = set()
        this_round: list[tuple[int, tuple[str, int]]] = []
        later: list[tuple[int, tuple[str, int]]] = []
        for i, job in waiting:
            if job[0] in claimed:
                claims[i] = Claim(ClaimOutcome.BUSY, lease_until=lease_until)
                continue
            (later if job[0] in seen else this_round).append((i, job))
            seen.add(job[0])
        waiting = later
        if not this_round:
            break
        found = await _claim_round(
            conn, [job for _, job in this_round], now=now, lease_until=lease_until, owner=owner
        )
        for i, (delivery_id, _) in this_round:
            claims[i] = found.get(delivery_id, Claim(ClaimOutcome.MISSING))
            if claims[i].outcome == ClaimOutcome.CLAIMED:
                claimed.add(delivery_id)
    return claims


async def _claim_round(
    conn: Connection,
    jobs: list[tuple[str, int]],
    *,
    now: datetime,
    lease_until: datetime,
    owner: str,
) -> dict[str, Claim]:
    by_attempt: dict[int, list[str]] = {}
    for delivery_id, job_attempt in jobs:
        by_attempt.setdefault(job_attempt, []).append(delivery_id)
    found: dict[str, Claim] = {}
    for job_attempt, ids in by_attempt.items():
        rows = await conn.execute(
            _CLAIM,
            {
                "ids": ids,
                "job_attempt": job_attempt,
                "now": now,
                "due_by": now + NOT_DUE_SLACK,
                "owner": owner,
                "lease_until": lease_until,
            },
        )
        for row in rows:
            found[row.id] = Claim(ClaimOutcome.CLAIMED, attempts=row.attempts)
    missed = [delivery_id for delivery_id, _ in jobs if delivery_id not in found]
    if missed:
        for row in await conn.execute(_CLAIM_MISSED, {"ids": missed}):
            found[row.id] = await _missed(conn, row, now)
    return found


async def _missed(conn: Connection, row: sa.Row[Any], now: datetime) -> Claim:
    """Why a job's delivery could not be started."""
    status = DeliveryStatus(row.status)
    if row.skip_reason is not None and await _cancel(conn, row.id, status, now):
        return Claim(ClaimOutcome.FINISHED, attempts=row.attempts, status=DeliveryStatus.SKIPPED)
    outcome = _MISSED.get(status, ClaimOutcome.FINISHED)
    return Claim(outcome, attempts=row.attempts, status=status, lease_until=row.lease_until)


async def _cancel(
    conn: Connection, delivery_id: str, status: DeliveryStatus, now: datetime
) -> bool:
    """Carry out a cancellation asked for while the delivery was under way: SKIPPED, unless
    a worker still holds a live lease on its attempt (that attempt ends first)."""
    result = await conn.execute(
        sa.update(deliveries)
        .where(
            D.id == delivery_id,
            D.status == status,
            sa.or_(
                D.status.in_(moving(SKIPPED, DeliveryStatus.PENDING, DeliveryStatus.RETRY_PENDING)),
                sa.and_(
                    D.status == leaving(DeliveryStatus.PROCESSING, to=SKIPPED), D.lease_until < now
                ),
            ),
        )
        .values(
            status=SKIPPED,
            lease_until=None,
            lease_owner=None,
            next_attempt_at=None,
            updated_at=now,
        )
    )
    return bool(result.rowcount)


async def finish(
    conn: Connection,
    delivery_id: str,
    *,
    attempt: int,
    status: DeliveryStatus,
    now: datetime,
    error: str | None = None,
    next_attempt_at: datetime | None = None,
    provider: str | None = None,
) -> bool:
    """End the attempt unsent, with ``status`` (a retry, a dead letter: what was sent ends
    through ``finish_sent``); False if this worker no longer owns it."""
    values: dict[str, object] = {
        "status": status,
        "lease_until": None,
        "lease_owner": None,
        "updated_at": now,
        "next_attempt_at": next_attempt_at,
        "provider": provider,
    }
    if error is not None:
        values["last_error"] = error[:2000]
    result = await conn.execute(
        sa.update(deliveries)
        .where(
            D.id == delivery_id,
            D.status == leaving(DeliveryStatus.PROCESSING, to=status),
            D.attempts == attempt,
        )
        .values(**values)
    )
    return bool(result.rowcount)


@dataclass(frozen=True, slots=True)
class Attempt:
    delivery_id: str
    attempt: int
    provider: str | None
    outcome: DeliveryStatus
    started_at: datetime
    finished_at: datetime
    error_class: str | None = None
    error: str | None = None
    retry_at: datetime | None = None


async def record_attempt(conn: Connection, attempt: Attempt) -> None:
    await record_attempts(conn, [attempt])


async def record_attempts(conn: Connection, attempts: list[Attempt]) -> None:
    """Many attempts in one multi-row statement."""
    if not attempts:
        return
    rows = []
    for attempt in attempts:
        values = {name: getattr(attempt, name) for name in Attempt.__dataclass_fields__}
        if values["error"] is not None:
            values["error"] = values["error"][:2000]
        rows.append(values)
    await insert_rows(conn, delivery_attempts, rows)


_OWNED = (
    sa.select(D.id, D.attempts)
    .where(one_of(D.id, "ids"), D.status == DeliveryStatus.PROCESSING)
    .with_for_update()
)


async def owned(conn: Connection, attempts: list[tuple[str, int]]) -> set[tuple[str, int]]:
    """Which of these ``(delivery id, attempt)`` are still under way at that attempt, i.e. can
    be finished by whoever claimed them; locked until the transaction ends."""
    if not attempts:
        return set()
    rows = await conn.execute(_OWNED, {"ids": [delivery_id for delivery_id, _ in attempts]})
    under_way = {(row.id, row.attempts) for row in rows}
    return {attempt for attempt in attempts if attempt in under_way}


_FINISH_SENT = (
    sa.update(deliveries)
    .where(
        D.id == sa.bindparam("delivery_id"),
        D.status == leaving(DeliveryStatus.PROCESSING, to=DeliveryStatus.SENT),
        D.attempts == sa.bindparam("attempt"),
    )
    .values(
        status=DeliveryStatus.SENT,
        lease_until=None,
        lease_owner=None,
        updated_at=sa.bindparam("now", type_=D.updated_at.type),
        sent_at=sa.bindparam("now", type_=D.updated_at.type),
        next_attempt_at=None,
        provider=sa.bindparam("provider"),
        provider_message_id=sa.bindparam("provider_message_id"),
        skip_reason=None,  # a cancellation asked for during the attempt came too late
    )
)
# Not one UPDATE ... FROM unnest(arrays) on PostgreSQL (tried): asyncpg keeps it prepared, and
# the generic plan PostgreSQL settles on while the table is young (a hash join over a
# sequential scan) stays until the next ANALYZE. Executed per row, each is a primary-key lookup.


@dataclass(frozen=True, slots=True)
class Sent:
    delivery_id: str
    attempt: int
    provider: str
    provider_message_id: str | None


async def finish_sent(conn: Connection, sent: list[Sent], now: datetime) -> None:
    """End these attempts as SENT, in one statement executed for each (see ``owned``: only
    attempts still under way are changed)."""
    if sent:
        await conn.execute(
            _FINISH_SENT,
            [
                {
                    "delivery_id": s.delivery_id,
                    "attempt": s.attempt,
                    "provider": s.provider,
                    "provider_message_id": s.provider_message_id,
                    "now": now,
                }
                for s in sent
            ],
        )


RECENT_ATTEMPTS = 100_000  # how far back recent_failures looks, in attempts of all tenants


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt, with where it went (the console's recent errors)."""

    attempt: Attempt
    channel: str
    notification_id: str


async def recent_failures(conn: Connection, tenant: str, *, limit: int) -> list[Failure]:
    """The tenant's latest failed attempts, newest first (not the history's replay markers,
    which carry the replay in ``error``)."""
    A = delivery_attempts.c
    # Only among the newest attempts: a tenant with few failures must not make the search read
    # the whole history (attempt ids grow with time).
    newest = await conn.scalar(sa.select(sa.func.max(A.id)))
    if newest is None:
        return []
    rows = await conn.execute(
        sa.select(delivery_attempts, D.channel, D.notification_id)
        .join(deliveries, D.id == A.delivery_id)
        .join(notifications, notifications.c.id == D.notification_id)
        .where(
            notifications.c.tenant_id == tenant,
            A.id > newest - RECENT_ATTEMPTS,
            A.error.is_not(None),
            A.outcome != DeliveryStatus.PENDING,
        )
        .order_by(A.id.desc())
        .limit(limit)
    )
    return [Failure(_attempt(r), r.channel, r.notification_id) for r in rows]


def _attempt(r: Any) -> Attempt:
    return Attempt(
        delivery_id=r.delivery_id,
        attempt=r.attempt,
        provider=r.provider,
        outcome=DeliveryStatus(r.outcome),
        started_at=r.started_at,
        finished_at=r.finished_at,
        error_class=r.error_class,
        error=r.error,
        retry_at=r.retry_at,
    )


async def attempts_of(conn: Connection, delivery_ids: list[str]) -> dict[str, list[Attempt]]:
    found: dict[str, list[Attempt]] = {d: [] for d in delivery_ids}
    if delivery_ids:
        rows = await conn.execute(
            sa.select(delivery_attempts)
            .where(delivery_attempts.c.delivery_id.in_(delivery_ids))
            .order_by(delivery_attempts.c.id)
        )
        for r in rows:
            found[r.delivery_id].append(_attempt(r))
    return found


async def first_failure(conn: Connection, delivery_id: str) -> datetime | None:
    result: datetime | None = await conn.scalar(
        sa.select(sa.func.min(delivery_attempts.c.started_at)).where(
            delivery_attempts.c.delivery_id == delivery_id,
            delivery_attempts.c.outcome != DeliveryStatus.SENT,
        )
    )
    return result


async def reopen(conn: Connection, delivery_id: str, now: datetime) -> bool:
    """A replayed dead letter: back to PENDING with a fresh attempt budget."""
    result = await conn.execute(
        sa.update(deliveries)
        .where(
            D.id == delivery_id,
            D.status.in_(
                moving(DeliveryStatus.PENDING, DeliveryStatus.DEAD_LETTERED, DeliveryStatus.FAILED)
            ),
        )
        .values(
            status=DeliveryStatus.PENDING,
            attempts=0,
            lease_until=None,
            next_attempt_at=None,
            updated_at=now,
        )
    )
    return bool(result.rowcount)


async def status_of(conn: Connection, delivery_id: str) -> DeliveryStatus | None:
    status = await conn.scalar(sa.select(D.status).where(D.id == delivery_id))
    return None if status is None else DeliveryStatus(status)


@dataclass(frozen=True, slots=True)
class Stuck:
    """A delivery whose job seems lost, with what it takes to queue it again."""

    delivery_id: str
    notification_id: str
    channel: str
    recipient: str
    status: DeliveryStatus
    attempts: int
    user_key: str
    subject: str | None
    body: str
    accepted_at: datetime
    content: dict[str, object] | None
    user_id: str | None
    category: str | None
    priority: str
    tenant_id: str


async def stuck(conn: Connection, *, before: datetime, limit: int) -> list[Stuck]:
    """Deliveries that should have moved long ago: queued, due for a retry, or lease lapsed."""
    n = notifications.c
    overdue = sa.or_(
        sa.and_(
            D.status == DeliveryStatus.PENDING,
            D.updated_at < before,
            sa.or_(D.next_attempt_at.is_(None), D.next_attempt_at < before),
        ),
        sa.and_(D.status == DeliveryStatus.RETRY_PENDING, D.next_attempt_at < before),
        sa.and_(D.status == DeliveryStatus.PROCESSING, D.lease_until < before),
    )
    rows = await conn.execute(
        sa.select(
            D.id,
            D.notification_id,
            D.channel,
            D.recipient,
            D.status,
            D.attempts,
            sa.func.coalesce(n.user_id, n.recipient).label("user_key"),
            n.subject,
            n.body,
            n.created_at,
            D.content,
            n.user_id,
            n.category,
            n.priority,
            n.tenant_id,
        )
        .join(notifications, notifications.c.id == D.notification_id)
        .where(overdue)
        .order_by(D.updated_at)
        .limit(limit)
    )
    return [
        Stuck(
            r.id,
            r.notification_id,
            r.channel,
            r.recipient,
            DeliveryStatus(r.status),
            r.attempts,
            r.user_key,
            r.subject,
            r.body,
            r.created_at,
            r.content,
            r.user_id,
            r.category,
            r.priority,
            r.tenant_id,
        )
        for r in rows
    ]


async def touch(conn: Connection, delivery_ids: list[str], now: datetime) -> None:
    """Mark as re-queued now, so the next sweep leaves them alone for a while."""
    await conn.execute(
        sa.update(deliveries)
        .where(D.id.in_(delivery_ids), D.status == DeliveryStatus.PENDING)
        .values(updated_at=now)
    )
    await conn.execute(
        sa.update(deliveries)
        .where(D.id.in_(delivery_ids), D.status == DeliveryStatus.RETRY_PENDING)
        .values(next_attempt_at=now)
    )
    await conn.execute(
        sa.update(deliveries)
        .where(D.id.in_(delivery_ids), D.status == DeliveryStatus.PROCESSING)
        .values(lease_until=now)
    )


async def skip_claimed(
    conn: Connection, delivery_id: str, *, attempt: int, reason: str, now: datetime
) -> bool:
    """A delivery just claimed that is not to be sent after all (its address was suppressed
    since it was routed): SKIPPED, the claim's attempt not counted."""
    result = await conn.execute(
        sa.update(deliveries)
        .where(
            D.id == delivery_id,
            D.status == leaving(DeliveryStatus.PROCESSING, to=SKIPPED),
            D.attempts == attempt,
        )
        .values(
            status=SKIPPED,
            skip_reason=reason,
            attempts=D.attempts - 1,
            lease_until=None,
            lease_owner=None,
            updated_at=now,
        )
    )
    return bool(result.rowcount)


async def skip(conn: Connection, delivery_id: str, reason: str, now: datetime) -> bool:
    """A PENDING delivery the user's preferences rule out; True if it was still PENDING."""
    result = await conn.execute(
        sa.update(deliveries)
        .where(D.id == delivery_id, D.status == leaving(DeliveryStatus.PENDING, to=SKIPPED))
        .values(status=SKIPPED, skip_reason=reason, updated_at=now)
    )
    return bool(result.rowcount)


async def postpone(
    conn: Connection, delivery_id: str, *, job_attempt: int, due: datetime, now: datetime
) -> bool:
    """Move the attempt a job would start to ``due``, without counting one (the delivery's
    destination is not taking anything now). False if the job may not start it anyway
    (finished, held by another worker, or a stale duplicate)."""
    due_now = sa.or_(D.next_attempt_at.is_(None), D.next_attempt_at <= now + NOT_DUE_SLACK)
    result = await conn.execute(
        sa.update(deliveries)
        .where(
            D.id == delivery_id,
            sa.or_(
                sa.and_(D.status == DeliveryStatus.PENDING, due_now),
                sa.and_(
                    D.status == DeliveryStatus.RETRY_PENDING, D.attempts == job_attempt, due_now
                ),
            ),
        )
        .values(next_attempt_at=due, updated_at=now)
    )
    return bool(result.rowcount)


async def defer(conn: Connection, delivery_id: str, due: datetime, now: datetime) -> None:
    """A PENDING delivery that waits (quiet hours, send_at): not claimable before ``due``."""
    await conn.execute(
        sa.update(deliveries)
        .where(D.id == delivery_id, D.status == DeliveryStatus.PENDING)
        .values(next_attempt_at=due, updated_at=now)
    )
