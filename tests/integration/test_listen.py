"""PostgreSQL LISTEN/NOTIFY wakes a relay when another process writes to the outbox."""

from __future__ import annotations

import asyncio

import pytest

from herald.bus.base import OutgoingMessage
from herald.clock import utcnow
from herald.store import outbox
from herald.store.database import Database
from herald.store.listen import PostgresListener
from herald.wakeup import Wakeup

pytestmark = pytest.mark.postgres


async def test_an_outbox_write_elsewhere_wakes_the_listener(fresh_pg_url: str) -> None:
    listening_db, writing_db = Database(fresh_pg_url), Database(fresh_pg_url)
    wakeup = Wakeup()
    woken = wakeup.subscribe()
    listener = PostgresListener(listening_db, outbox.NOTIFY_CHANNEL, wakeup)
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    await asyncio.wait_for(listener.ready.wait(), 10)

    async with writing_db.write() as conn:  # stands for another process
        await outbox.add(conn, [OutgoingMessage("t", "k", b"v")], now=utcnow())
    await asyncio.wait_for(woken.wait(), 10)

    stop.set()
    await task
    for db in (listening_db, writing_db):
        await db.close()
