"""Receipts as stored (``delivery_receipts``), and the delivery a receipt is about."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from herald.domain.models import DeliveryStatus
from herald.domain.receipts import Receipt, ReceiptKind, ReceiptOutcome
from herald.domain.states import IN_PROGRESS, sources
from herald.store.database import Connection
from herald.store.dialect import insert_if_absent
from herald.store.one_of import one_of
from herald.store.tables import deliveries, delivery_receipts, notifications

R, D, N = delivery_receipts.c, deliveries.c, notifications.c


@dataclass(frozen=True, slots=True)
class Target:
    """The delivery a receipt is about, with what its status event names."""

    delivery_id: str
    notification_id: str
    tenant_id: str
    channel: str
    recipient: str
    user_key: str
    status: DeliveryStatus
    attempts: int


@dataclass(frozen=True, slots=True)
class Stored:
    id: int
    receipt: Receipt
    notification_id: str | None
    outcome: ReceiptOutcome
    received_at: datetime


_TARGETS = (
    sa.select(
        D.id,
        D.notification_id,
        N.tenant_id,
        D.channel,
        D.recipient,
        sa.func.coalesce(N.user_id, N.recipient).label("user_key"),
        D.status,
        D.attempts,
    )
    .join(notifications, N.id == D.notification_id)
    .where(one_of(D.id, "ids"))
    .order_by(D.id)
)


async def targets(conn: Connection, delivery_ids: list[str]) -> dict[str, Target]:
    """The deliveries Herald has of these ids, locked until the transaction ends, in id order
    (two transactions naming the same deliveries take turns rather than deadlock)."""
    ids = sorted(set(delivery_ids))
    if not ids:
        return {}
    statement = (
        _TARGETS if conn.dialect.name == "sqlite" else _TARGETS.with_for_update(of=deliveries)
    )
    rows = await conn.execute(statement, {"ids": ids})
    return {
        row.id: Target(
            row.id,
            row.notification_id,
            row.tenant_id,
            row.channel,
            row.recipient,
            row.user_key,
            DeliveryStatus(row.status),
            row.attempts,
        )
        for row in rows
    }


async def count_for(conn: Connection, delivery_id: str) -> int:
    found = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(delivery_receipts)
        .where(R.delivery_id == delivery_id)
    )
    return int(found or 0)


async def move(conn: Connection, delivery_id: str, to: DeliveryStatus, now: datetime) -> bool:
    """Move the delivery to ``to`` if the state machine allows it from where it is."""
    result = await conn.execute(
        sa.update(deliveries)
        .where(D.id == delivery_id, D.status.in_(sources(to)))
        .values(status=to, updated_at=now)
    )
    return bool(result.rowcount)


async def add(
    conn: Connection,
    receipt: Receipt,
    *,
    notification_id: str | None,
    outcome: ReceiptOutcome,
    now: datetime,
) -> bool:
    """Store the receipt; False if the provider sent this one before (nothing stored)."""
    return await insert_if_absent(
        conn,
        delivery_receipts,
        {
            "provider": receipt.provider,
            "receipt_key": _clean(receipt.key, 255),
            "delivery_id": _clean(receipt.delivery_id, 36),
            "notification_id": notification_id,
            "kind": receipt.kind,
            "code": None if receipt.code is None else _clean(receipt.code, 64),
            "detail": None if receipt.detail is None else _clean(receipt.detail, 2000),
            "occurred_at": receipt.occurred_at,
            "received_at": now,
            "outcome": outcome,
            "suppress": receipt.suppress,
        },
    )


def _clean(text: str, length: int) -> str:
    """Within the column, and without NUL or a lone surrogate (which PostgreSQL refuses)."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")[:length]


async def settle_early(
    conn: Connection, receipt_id: int, outcome: ReceiptOutcome, notification_id: str | None
) -> None:
    """Record what became of an early receipt (unless another sweep already did)."""
    await conn.execute(
        sa.update(delivery_receipts)
        .where(R.id == receipt_id, R.outcome == ReceiptOutcome.EARLY)
        .values(outcome=outcome, notification_id=notification_id)
    )


def _stored(row: Any) -> Stored:
    receipt = Receipt(
        provider=row.provider,
        key=row.receipt_key,
        delivery_id=row.delivery_id,
        kind=ReceiptKind(row.kind),
        code=row.code,
        detail=row.detail,
        occurred_at=row.occurred_at,
        suppress=row.suppress,
    )
    return Stored(
        row.id, receipt, row.notification_id, ReceiptOutcome(row.outcome), row.received_at
    )


async def any_early(conn: Connection) -> bool:
    """Whether any receipt still waits for its delivery's send to be recorded."""
    found = await conn.scalar(sa.select(sa.exists().where(R.outcome == ReceiptOutcome.EARLY)))
    return bool(found)


async def early(conn: Connection, *, limit: int, lock: bool = False) -> list[Stored]:
    """Receipts that came before their delivery was recorded as sent and whose delivery has
    moved on since (or is gone), oldest first; with ``lock``, locked, skipping those another
    transaction holds."""
    query = (
        sa.select(delivery_receipts)
        .outerjoin(deliveries, D.id == R.delivery_id)
        .where(
            R.outcome == ReceiptOutcome.EARLY,
            sa.or_(D.id.is_(None), D.status.not_in(list(IN_PROGRESS))),
        )
        .order_by(R.id)
        .limit(limit)
    )
    if lock and conn.dialect.name != "sqlite":
        query = query.with_for_update(of=delivery_receipts, skip_locked=True)
    return [_stored(r) for r in await conn.execute(query)]


async def of_notifications(conn: Connection, notification_ids: list[str]) -> list[Stored]:
    if not notification_ids:
        return []
    rows = await conn.execute(
        sa.select(delivery_receipts).where(one_of(R.notification_id, "ids")).order_by(R.id),
        {"ids": notification_ids},
    )
    return [_stored(r) for r in rows]
