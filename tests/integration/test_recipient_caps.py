"""Daily caps hold when routers count the same address at the same instant."""

from __future__ import annotations

import asyncio
from datetime import datetime

from herald.clock import utcnow
from herald.store import recipient_caps
from herald.store.database import Connection, Database


async def _count(conn: Connection, delivery_id: str, now: datetime, cap: int = 1) -> bool:
    """Whether one delivery to the address is admitted."""
    counted = recipient_caps.Counted("t", "sms", "+14155550100", delivery_id, cap)
    return not await recipient_caps.admit_many(conn, [counted], now=now)


async def _admit(db: Database, delivery_id: str, now: datetime, cap: int = 1) -> bool:
    async with db.write() as conn:
        return await _count(conn, delivery_id, now, cap)


async def test_two_routers_at_once_never_admit_past_the_cap(db: Database) -> None:
    now = utcnow()
    async with db.write() as first:
        # The first router counted the address and has not committed yet...
        assert await _count(first, "d1", now)
        # ...when a second one counts it too: it must wait for the first, not read 0.
        second = asyncio.create_task(_admit(db, "d2", now))
        await asyncio.sleep(0.3)
    assert await second is False
    assert await _admit(db, "d1", now) is True  # the same delivery routed again: still counted once


async def test_many_at_once_admit_exactly_the_cap(db: Database) -> None:
    now = utcnow()
    admitted = await asyncio.gather(*(_admit(db, f"d{i}", now, cap=3) for i in range(12)))
    assert sum(admitted) == 3


async def test_a_batch_is_counted_in_order_against_each_address_cap(db: Database) -> None:
    now = utcnow()

    def sms(delivery_id: str, recipient: str) -> recipient_caps.Counted:
        return recipient_caps.Counted("t", "sms", recipient, delivery_id, cap=2)

    async with db.write() as conn:
        assert await _count(conn, "earlier", now, cap=2)  # the first address's first
    batch = [
        sms("a1", "+14155550100"),  # its second: the cap
        sms("b1", "+14155550101"),
        sms("b1", "+14155550101"),  # the same delivery twice: counted once
        sms("a2", "+14155550100"),
        sms("earlier", "+14155550100"),  # routed again: counted before, admitted
        sms("b2", "+14155550101"),
        sms("b3", "+14155550101"),
    ]
    async with db.write() as conn:
        assert await recipient_caps.admit_many(conn, batch, now=now) == {"a2", "b3"}
    async with db.write() as conn:  # routed again: as it was counted
        assert await recipient_caps.admit_many(conn, batch, now=now) == {"a2", "b3"}
