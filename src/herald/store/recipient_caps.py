"""Per-recipient daily caps: how many deliveries one address got on a channel today.

SMS costs money and reaches a phone: a caller (or a leaked key) must not be able to send
one number a thousand texts. Each routed delivery is counted once, by its id, so routing a
notification again after a crash does not count it twice. Addresses are stored hashed.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime

import sqlalchemy as sa

from herald.store.database import Connection, Database
from herald.store.dialect import insert_if_absent, lock_until_commit
from herald.store.purge import delete_in_chunks
from herald.store.tables import recipient_sends

S = recipient_sends.c


def recipient_key(tenant: str, channel: str, recipient: str) -> str:
    return hashlib.sha256(f"{tenant}\0{channel}\0{recipient}".encode()).hexdigest()


async def admit(
    conn: Connection,
    *,
    tenant: str,
    channel: str,
    recipient: str,
    delivery_id: str,
    cap: int,
    now: datetime,
) -> bool:
    """Count the delivery against today's cap (UTC); False when the cap is already reached.
    Routers counting one address at the same instant take turns (a lock per address until
    their transaction commits), so none admits one past the cap."""
    if await conn.scalar(sa.select(S.delivery_id).where(S.delivery_id == delivery_id)):
        return True  # counted when it was first routed
    key = recipient_key(tenant, channel, recipient)
    await lock_until_commit(conn, f"recipient_sends:{key}")
    today = now.date()
    sent = await conn.scalar(
        sa.select(sa.func.count()).where(S.recipient_key == key, S.day == today)
    )
    if (sent or 0) >= cap:
        return False
    await insert_if_absent(
        conn,
        recipient_sends,
        {"delivery_id": delivery_id, "recipient_key": key, "day": today, "created_at": now},
    )
    return True


async def purge_before(db: Database, day: date) -> int:
    return await delete_in_chunks(db, recipient_sends, S.day < day)
