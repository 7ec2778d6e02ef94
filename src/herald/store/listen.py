"""PostgreSQL LISTEN: wake this process's relay when another process writes to the outbox.

Polling remains the fallback (HERALD_POLL_INTERVAL_SECONDS); this only removes its delay. The
listening connection is Herald's own, outside the pool, and is re-opened when it drops.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from herald.observability.logging import get_logger
from herald.reliability.backoff import Backoff
from herald.store.database import Database
from herald.wakeup import Wakeup, sleep_unless

log = get_logger(__name__)
_BACKOFF = Backoff(base=0.5, cap=30.0)


class PostgresListener:
    def __init__(self, db: Database, channel: str, wakeup: Wakeup) -> None:
        self.dsn = db.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.channel = channel
        self.wakeup = wakeup
        self.ready = asyncio.Event()  # listening (for tests and readiness)

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                connection = await asyncpg.connect(self.dsn, timeout=10)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                failures += 1
                log.warning("listen.connect_failed", channel=self.channel, error=str(exc))
                await sleep_unless(stop, _BACKOFF.ceiling(failures))
                continue
            failures = 0
            lost = asyncio.Event()
            connection.add_termination_listener(lambda _conn, lost=lost: lost.set())
            await connection.add_listener(self.channel, self._notified)
            self.ready.set()
            log.info("listen.started", channel=self.channel)
            stopping = asyncio.create_task(stop.wait())
            dropped = asyncio.create_task(lost.wait())
            await asyncio.wait({stopping, dropped}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            dropped.cancel()
            if not connection.is_closed():
                await connection.close()
            if not stop.is_set():
                log.warning("listen.connection_lost", channel=self.channel)

    def _notified(self, *_args: Any) -> None:
        self.wakeup.notify()
