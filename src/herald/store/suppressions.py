"""A tenant's suppression list: addresses its notifications are not sent to, per channel.

The API and `herald suppressions` add addresses (an import, with a reason: hard_bounce,
complaint, unsubscribe or manual). Routing skips a suppressed address: no send, no daily-cap
count. Addresses are
kept as ``normal`` spells them, so "Ann@Example.com" and "ann@example.com" are one entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from herald.store.database import Connection
from herald.store.dialect import insert_if_absent
from herald.store.tables import suppressions

S = suppressions.c

# Why an address is on the list.
REASONS = ("hard_bounce", "complaint", "unsubscribe", "manual")
SKIP_REASON = "suppressed"  # a delivery to a suppressed address: SKIPPED with this reason


@dataclass(frozen=True, slots=True)
class Suppression:
    channel: str
    address: str
    reason: str
    detail: str | None
    created_at: datetime


def normal(channel: str, address: str) -> str:
    """An address as the list keeps it: email addresses in lower case (mail systems treat
    them so in practice), any other as given, without surrounding space."""
    address = address.strip()
    return address.lower() if channel == "email" else address


def address_problem(channel: str, address: str) -> str | None:
    """What is wrong with an address to put on (or look up in) the list, or None."""
    address = address.strip()
    if not address or len(address) > 1024:
        return "give 1 to 1024 characters"
    if channel == "email" and "@" not in address:
        return f"{address!r} is not an email address"
    return None


async def add(
    conn: Connection,
    tenant: str,
    channel: str,
    address: str,
    *,
    reason: str,
    now: datetime,
    detail: str | None = None,
) -> bool:
    """Put the address on the list; False if it was there already (kept as it was)."""
    return await insert_if_absent(
        conn,
        suppressions,
        {
            "tenant_id": tenant,
            "channel": channel,
            "address": normal(channel, address),
            "reason": reason,
            "detail": detail,
            "created_at": now,
        },
    )


async def remove(conn: Connection, tenant: str, channel: str, address: str) -> bool:
    result = await conn.execute(
        sa.delete(suppressions).where(
            S.tenant_id == tenant, S.channel == channel, S.address == normal(channel, address)
        )
    )
    return bool(result.rowcount)


def unsubscribed_everything(user_id: str) -> str:
    """The detail of an address suppressed because its user unsubscribed from everything."""
    return f"user {user_id[:200]} unsubscribed from everything"


async def follow_unsubscribe_all(
    conn: Connection,
    tenant: str,
    user_id: str,
    before: Iterable[tuple[str, str]],
    after: Iterable[tuple[str, str]],
    now: datetime,
) -> list[tuple[str, str]]:
    """A user unsubscribed from everything has its addresses ``(channel, address)`` on the
    list (``unsubscribe``), so no notification reaches them by any way, inline ones
    included. ``before`` and ``after``: those it should have had suppressed so, and has now
    (none while subscribed): the new ones are added, those no longer its come off (an address
    on the list for another cause stays). The addresses added."""
    detail = unsubscribed_everything(user_id)
    had = {(channel, normal(channel, a)) for channel, a in before}
    has = {(channel, normal(channel, a)) for channel, a in after}
    for channel, address in sorted(had - has):
        await conn.execute(
            sa.delete(suppressions).where(
                S.tenant_id == tenant,
                S.channel == channel,
                S.address == address,
                S.reason == "unsubscribe",
                S.detail == detail,
            )
        )
    added = []
    for channel, address in sorted(has - had):
        if await add(conn, tenant, channel, address, reason="unsubscribe", now=now, detail=detail):
            added.append((channel, address))
    return added


async def get(conn: Connection, tenant: str, channel: str, address: str) -> Suppression | None:
    row = (
        await conn.execute(
            sa.select(suppressions).where(
                S.tenant_id == tenant,
                S.channel == channel,
                S.address == normal(channel, address),
            )
        )
    ).first()
    return None if row is None else _suppression(row)


async def among(
    conn: Connection, tenant: str, wanted: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which of these (channel, address) pairs are suppressed, as given (not normalised)."""
    by_key: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for channel, address in wanted:
        by_key.setdefault((channel, normal(channel, address)), []).append((channel, address))
    found: set[tuple[str, str]] = set()
    keys = list(by_key)
    for start in range(0, len(keys), 500):  # bound the statement's parameters
        chunk = keys[start : start + 500]
        rows = await conn.execute(
            sa.select(S.channel, S.address).where(
                S.tenant_id == tenant, sa.tuple_(S.channel, S.address).in_(chunk)
            )
        )
        for row in rows:
            found.update(by_key[(row.channel, row.address)])
    return found


async def suppressed(
    conn: Connection, wanted: Iterable[tuple[str, str, str]]
) -> set[tuple[str, str, str]]:
    """Which of these (tenant, channel, address) are suppressed, as given, in one statement
    (a look-up of the primary key each: cheap when nobody suppresses anything)."""
    by_key: dict[tuple[str, str, str], list[tuple[str, str, str]]] = {}
    for tenant, channel, address in wanted:
        by_key.setdefault((tenant, channel, normal(channel, address)), []).append(
            (tenant, channel, address)
        )
    if not by_key:
        return set()
    rows = await conn.execute(_SUPPRESSED, {"keys": list(by_key)})
    return {given for row in rows for given in by_key[(row[0], row[1], row[2])]}


_SUPPRESSED = sa.select(S.tenant_id, S.channel, S.address).where(
    sa.tuple_(S.tenant_id, S.channel, S.address).in_(sa.bindparam("keys", expanding=True))
)


async def any_for(conn: Connection, tenant: str) -> bool:
    """Whether the tenant suppresses any address."""
    return bool((await conn.execute(sa.select(any_of(tenant)))).scalar())


def any_of(tenant: str | sa.BindParameter[str]) -> sa.Exists:
    """Whether the tenant suppresses any address, as an expression (to ask with others in
    one statement)."""
    return sa.exists().where(S.tenant_id == tenant)


async def page(
    conn: Connection,
    tenant: str,
    *,
    channel: str | None,
    after: tuple[str, str] | None,
    limit: int,
) -> list[Suppression]:
    """The list in (channel, address) order, from just after ``after``."""
    query = sa.select(suppressions).where(S.tenant_id == tenant)
    if channel is not None:
        query = query.where(S.channel == channel)
    if after is not None:
        query = query.where(sa.tuple_(S.channel, S.address) > after)
    rows = await conn.execute(query.order_by(S.channel, S.address).limit(limit))
    return [_suppression(r) for r in rows]


def _suppression(row: sa.Row[tuple[object, ...]]) -> Suppression:
    m = row._mapping
    return Suppression(m["channel"], m["address"], m["reason"], m["detail"], m["created_at"])
