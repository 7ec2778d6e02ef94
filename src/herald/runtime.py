"""What one Herald process shares between its roles: settings, database, bus, intake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from herald.bus import build_bus
from herald.bus.topics import Topics
from herald.config import Settings
from herald.domain.models import Channel
from herald.observability.logging import get_logger
from herald.pipeline.intake import Intake
from herald.store.database import Database
from herald.store.migrate import require_current, upgrade
from herald.wakeup import Wakeup

log = get_logger(__name__)

CHANNELS: list[str] = [c.value for c in Channel]


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(
            settings.database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            pool_size=settings.db_pool_size,
        )
        self.topics = Topics(settings.topic_prefix)
        self.bus = build_bus(settings, self.db)
        # Lets the relay start at once when this process wrote to the outbox.
        self.outbox_wakeup = Wakeup()
        self.intake = Intake(
            self.db,
            self.topics,
            self.outbox_wakeup,
            idempotency_ttl=settings.idempotency_ttl_seconds,
        )

    async def start(self, *, migrate: bool) -> None:
        if migrate:
            await upgrade(self.db)
        else:
            await require_current(self.db)
        await self.bus.start()
        await self.bus.ensure_topics(self.topics.all(CHANNELS))
        log.info("runtime.started", database=self.db.dialect, bus=self.bus.name)

    async def close(self) -> None:
        await self.bus.close()
        await self.db.close()


@asynccontextmanager
async def running(settings: Settings, *, migrate: bool) -> AsyncIterator[Runtime]:
    runtime = Runtime(settings)
    try:
        await runtime.start(migrate=migrate)
        yield runtime
    finally:
        await runtime.close()
