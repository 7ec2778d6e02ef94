"""A notification's timeline: every step in order, read from where each step is recorded.

The answer to "why was this (not) sent?": accepted (the notification row), published and
routed (the journal: a delivery routed by the API itself has no published step, and a
notification whose deliveries went both ways has a routed step from each), each attempt with
its error and the retry it scheduled (attempt history), dead-lettered (dead letters),
replayed (the journal), each receipt a provider sent afterwards (receipts: what it said and
what Herald did with it), completed (the row again).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from herald.domain.models import DeliveryStatus
from herald.store import deadletters, deliveries, journal, notifications, receipts
from herald.store.database import Connection
from herald.store.notifications import NotificationRecord


@dataclass(frozen=True, slots=True)
class Entry:
    at: datetime
    step: str
    delivery_id: str | None = None
    channel: str | None = None
    provider: str | None = None
    attempt: int | None = None
    status: str | None = None
    error_class: str | None = None
    error: str | None = None
    retry_at: datetime | None = None
    detail: str | None = None


async def timeline(
    conn: Connection, tenant: str, notification_id: str
) -> tuple[NotificationRecord, list[Entry]] | None:
    record = await notifications.get(conn, tenant, notification_id)
    if record is None:
        return None
    channel_of = {d.id: d.channel for d in record.deliveries}
    entries = [
        Entry(
            record.created_at,
            "accepted",
            detail="channels " + ",".join(d.channel for d in record.deliveries),
        )
    ]
    entries += [
        Entry(s.at, s.step, s.delivery_id, s.channel, detail=s.detail)
        for s in await journal.steps_of(conn, notification_id)
    ]
    history = await deliveries.attempts_of(conn, list(channel_of))
    for delivery_id, attempts in history.items():
        for a in attempts:
            if a.outcome == DeliveryStatus.PENDING:
                continue  # the history's marker of a replay: the journal's step says it
            sent = a.outcome == DeliveryStatus.SENT
            entries.append(
                Entry(
                    a.finished_at,
                    "sent" if sent else "attempt_failed",
                    delivery_id,
                    channel_of[delivery_id],
                    a.provider,
                    a.attempt,
                    a.outcome.value,
                    a.error_class,
                    a.error,
                    a.retry_at,
                )
            )
            if a.retry_at is not None:
                entries.append(
                    Entry(
                        a.finished_at,
                        "retry_scheduled",
                        delivery_id,
                        channel_of[delivery_id],
                        a.provider,
                        a.attempt + 1,
                        retry_at=a.retry_at,
                    )
                )
    for letter in await deadletters.of_notification(conn, notification_id):
        entries.append(
            Entry(
                letter.last_failed_at,
                "dead_lettered",
                letter.delivery_id,
                letter.channel,
                letter.provider,
                letter.attempts,
                letter.reason,
                letter.error_class,
                letter.error,
                detail=f"dead letter {letter.id} ({letter.kind})",
            )
        )
    for stored in await receipts.of_notifications(conn, [notification_id]):
        r = stored.receipt
        entries.append(
            Entry(
                stored.received_at,
                "receipt",
                r.delivery_id,
                channel_of.get(r.delivery_id),
                r.provider,
                status=r.kind.value,
                error=" ".join(filter(None, (r.code, r.detail))) or None,
                detail=stored.outcome.value,
            )
        )
    if record.completed_at is not None:
        entries.append(Entry(record.completed_at, "completed", status=record.status.value))
    entries.sort(key=lambda e: e.at)  # stable: same-instant steps keep their causal order
    return record, entries
