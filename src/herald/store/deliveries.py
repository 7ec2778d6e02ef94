"""Delivery state changes, each guarded so that only the current attempt's owner can make it.

An attempt starts with ``claim``: PENDING, a due retry, or a PROCESSING delivery whose lease
has lapsed (its worker died) becomes PROCESSING with ``attempts + 1``. Finishing an attempt
(``finish``) only succeeds while the delivery is still PROCESSING at that attempt number, so a
worker whose lease was taken over cannot overwrite its successor's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.domain.models import DeliveryStatus
from herald.store.tables import deliveries

D = deliveries.c


class ClaimOutcome(StrEnum):
    CLAIMED = "claimed"  # this worker now owns the attempt
    FINISHED = "finished"  # nothing left to do (SENT, FAILED, SKIPPED, ...)
    BUSY = "busy"  # another worker holds a live lease
    STALE = "stale"  # a duplicate of a job that a later retry has replaced
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: ClaimOutcome
    attempts: int = 0
    status: DeliveryStatus | None = None
    lease_until: datetime | None = None


async def claim(
    conn: AsyncConnection,
    delivery_id: str,
    *,
    job_attempt: int,
    now: datetime,
    lease_until: datetime,
) -> Claim:
    """Start an attempt. ``job_attempt`` is the attempt count the job was scheduled at."""
    claimable = sa.or_(
        D.status == DeliveryStatus.PENDING,
        # Only the job scheduled for this retry may start it; older duplicates are stale.
        sa.and_(D.status == DeliveryStatus.RETRY_PENDING, D.attempts == job_attempt),
        sa.and_(D.status == DeliveryStatus.PROCESSING, D.lease_until < now),
    )
    attempts = await conn.scalar(
        sa.update(deliveries)
        .where(D.id == delivery_id, claimable)
        .values(
            status=DeliveryStatus.PROCESSING,
            attempts=D.attempts + 1,
            lease_until=lease_until,
            last_attempt_at=now,
            next_attempt_at=None,
            updated_at=now,
        )
        .returning(D.attempts)
    )
    if attempts is not None:
        return Claim(ClaimOutcome.CLAIMED, attempts=attempts)
    row = (
        await conn.execute(
            sa.select(D.status, D.attempts, D.lease_until).where(D.id == delivery_id)
        )
    ).first()
    if row is None:
        return Claim(ClaimOutcome.MISSING)
    status = DeliveryStatus(row.status)
    outcome = {
        DeliveryStatus.PROCESSING: ClaimOutcome.BUSY,
        DeliveryStatus.RETRY_PENDING: ClaimOutcome.STALE,
    }.get(status, ClaimOutcome.FINISHED)
    return Claim(outcome, attempts=row.attempts, status=status, lease_until=row.lease_until)


async def finish(
    conn: AsyncConnection,
    delivery_id: str,
    *,
    attempt: int,
    status: DeliveryStatus,
    now: datetime,
    error: str | None = None,
    next_attempt_at: datetime | None = None,
    provider: str | None = None,
    provider_message_id: str | None = None,
) -> bool:
    """End the attempt with ``status``; False if this worker no longer owns it."""
    values: dict[str, object] = {
        "status": status,
        "lease_until": None,
        "updated_at": now,
        "next_attempt_at": next_attempt_at,
        "provider": provider,
    }
    if status == DeliveryStatus.SENT:
        values.update(sent_at=now, provider_message_id=provider_message_id)
    if error is not None:
        values["last_error"] = error[:2000]
    result = await conn.execute(
        sa.update(deliveries)
        .where(D.id == delivery_id, D.status == DeliveryStatus.PROCESSING, D.attempts == attempt)
        .values(**values)
    )
    return bool(result.rowcount)
