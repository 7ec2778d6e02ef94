"""Deleting a user: what goes with it, in the caller's one transaction.

- the user's row: contact points, preferences, webhook signing secrets, and the secret its
  unsubscribe links are signed with (so they stop working);
- its in-app inbox;
- what was still to be sent to it: deliveries PENDING (scheduled ones too) or waiting for a
  retry become SKIPPED (``user_deleted``), so a worker that later gets their job cannot claim
  them; one under way finishes its attempt, is never retried, and becomes SKIPPED too if
  that attempt did not send it (see deliveries.claim). A notification left with nothing
  sent is CANCELLED.

Notifications and their delivery history stay, for audit: what was sent, when, and to whom.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import sqlalchemy as sa

from herald.domain.models import DeliveryStatus, NotificationStatus
from herald.domain.states import CANCELLABLE, moving
from herald.store import inbox, journal, notifications, users
from herald.store.database import Connection
from herald.store.tables import deliveries
from herald.store.tables import notifications as notifications_table

SKIP_REASON: Final = "user_deleted"
D = deliveries.c
N = notifications_table.c
_OPEN = [NotificationStatus.SCHEDULED, NotificationStatus.PENDING]


async def delete_user(conn: Connection, tenant: str, user_id: str, now: datetime) -> bool:
    """False if there is no such user (nothing is changed then)."""
    if not await users.delete(conn, tenant, user_id):
        return False
    await inbox.delete_all(conn, tenant, user_id)
    await _cancel_deliveries(conn, tenant, user_id, now)
    return True


async def _cancel_deliveries(conn: Connection, tenant: str, user_id: str, now: datetime) -> None:
    open_ids = (
        (
            await conn.execute(
                sa.select(N.id).where(
                    N.tenant_id == tenant, N.user_id == user_id, N.status.in_(_OPEN)
                )
            )
        )
        .scalars()
        .all()
    )
    if not open_ids:
        return
    of_user = D.notification_id.in_(open_ids)
    cancelled = (
        await conn.execute(
            sa.update(deliveries)
            .where(of_user, D.status.in_(moving(DeliveryStatus.SKIPPED, *CANCELLABLE)))
            .values(
                status=DeliveryStatus.SKIPPED,
                skip_reason=SKIP_REASON,
                next_attempt_at=None,
                updated_at=now,
            )
            .returning(D.id, D.notification_id, D.channel)
        )
    ).all()
    # Under way: the attempt ends as it ends, but is never retried (deliveries.claim).
    await conn.execute(
        sa.update(deliveries)
        .where(of_user, D.status == DeliveryStatus.PROCESSING)
        .values(skip_reason=SKIP_REASON, updated_at=now)
    )
    await journal.record(
        conn,
        [
            journal.Step(r.notification_id, journal.SKIPPED, now, r.id, r.channel, SKIP_REASON)
            for r in cancelled
        ],
    )
    # Those with every delivery skipped here are CANCELLED (no other writer can change them
    # now: this transaction holds their deliveries); the others settle as every writer does,
    # in turn with a worker ending one's attempt under way (notifications.settle).
    found = await notifications.delivery_statuses_of(conn, open_ids)
    all_skipped = sorted(i for i, s in found.items() if all(x == DeliveryStatus.SKIPPED for x in s))
    for notification_id in all_skipped:
        await _mark_cancelled(conn, notification_id, now)
    await notifications.settle(conn, set(open_ids) - set(all_skipped), now)


async def _mark_cancelled(conn: Connection, notification_id: str, now: datetime) -> None:
    await conn.execute(
        sa.update(notifications_table)
        .where(N.id == notification_id)
        .values(status=NotificationStatus.CANCELLED, updated_at=now, completed_at=now)
    )
