"""Keeps the planner's statistics of fast-growing young tables fresh (PostgreSQL; see
``store/table_statistics``): a check every few seconds, an ANALYZE when a table has grown."""

from __future__ import annotations

import asyncio

from herald.observability.logging import get_logger
from herald.store.database import Database
from herald.store.table_statistics import analyze_grown
from herald.wakeup import sleep_unless

log = get_logger(__name__)


class StatisticsKeeper:
    def __init__(self, db: Database, *, interval: float = 2.0) -> None:
        self.db = db
        self.interval = interval
        self.analyzed: dict[str, float] = {}  # rows at this process's last ANALYZE, by table

    async def run(self, stop: asyncio.Event) -> None:
        while not await sleep_unless(stop, self.interval):
            try:
                await self.check_once()
            except Exception as exc:  # the database away: the next check tries again
                log.warning("statistics.check_failed", error=f"{type(exc).__name__}: {exc}")

    async def check_once(self) -> list[str]:
        """ANALYZE the hot tables that have grown enough; their names."""
        async with self.db.read() as conn:
            analyzed = await analyze_grown(conn, self.analyzed)
        if analyzed:
            log.info("statistics.analyzed", tables=",".join(analyzed))
        return analyzed
