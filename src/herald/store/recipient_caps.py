"""Per-recipient daily caps: how many deliveries one address got on a channel today.

SMS costs money and reaches a phone: a caller (or a leaked key) must not be able to send
one number a thousand texts. Each routed delivery is counted once, by its id, so routing a
notification again after a crash does not count it twice. Addresses are stored hashed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import sqlalchemy as sa

from herald.store.database import Connection, Database
from herald.store.dialect import insert_ignore, lock_until_commit
from herald.store.one_of import one_of
from herald.store.purge import delete_in_chunks
from herald.store.tables import recipient_sends

S = recipient_sends.c


def recipient_key(tenant: str, channel: str, recipient: str) -> str:
    return hashlib.sha256(f"{tenant}\0{channel}\0{recipient}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Counted:
    """A delivery to count against its address's daily cap on its channel."""

    tenant: str
    channel: str
    recipient: str
    delivery_id: str
    cap: int

    @property
    def key(self) -> str:
        return recipient_key(self.tenant, self.channel, self.recipient)


_COUNTED = sa.select(S.delivery_id).where(one_of(S.delivery_id, "ids"))
_SENT_TODAY = (
    sa.select(S.recipient_key, sa.func.count())
    .where(one_of(S.recipient_key, "keys"), S.day == sa.bindparam("day"))
    .group_by(S.recipient_key)
)


async def admit_many(conn: Connection, wanted: Sequence[Counted], *, now: datetime) -> set[str]:
    """Count these deliveries against today's caps (UTC), in order; the ids of those refused
    because their address had reached its cap. A delivery counted before (routed again after
    a crash) is admitted and not counted again. Routers counting one address at the same
    instant take turns (a lock per address, taken in the order given, until their
    transaction commits: callers give them in one order), so none admits one past the cap.
    A statement each for the counted, the counts and the new rows, whatever the number."""
    if not wanted:
        return set()
    ids = [w.delivery_id for w in wanted]
    counted = set((await conn.execute(_COUNTED, {"ids": ids})).scalars())
    fresh = [(w, w.key) for w in wanted if w.delivery_id not in counted]
    keys = list(dict.fromkeys(key for _, key in fresh))
    for key in keys:
        await lock_until_commit(conn, f"recipient_sends:{key}")
    today = now.date()
    sent: dict[str, int] = {}
    if keys:
        found = await conn.execute(_SENT_TODAY, {"keys": keys, "day": today})
        sent = {key: int(count) for key, count in found}
    refused: set[str] = set()
    rows: list[dict[str, object]] = []
    for w, key in fresh:
        if w.delivery_id in counted:
            continue  # twice in this batch: counted once
        if sent.get(key, 0) >= w.cap:
            refused.add(w.delivery_id)
            continue
        sent[key] = sent.get(key, 0) + 1
        counted.add(w.delivery_id)
        row = {"delivery_id": w.delivery_id, "recipient_key": key, "day": today, "created_at": now}
        rows.append(row)
    await insert_ignore(conn, recipient_sends, rows)
    return refused


async def purge_before(db: Database, day: date) -> int:
    return await delete_in_chunks(db, recipient_sends, S.day < day)
