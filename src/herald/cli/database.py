"""One piece of database work from an operator's command, in a write transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from herald.cli.errors import fail
from herald.errors import ConfigError
from herald.store.database import Connection, Database

T = TypeVar("T")


def with_database(work: Callable[[Connection], Awaitable[T]]) -> T:
    """Run ``work`` in one write transaction on the configured database."""
    from herald.cli.settings import settings_or_exit
    from herald.store.migrate import require_current, upgrade

    settings = settings_or_exit()

    async def main() -> T:
        db = Database(settings.database_url)
        try:
            # As `herald serve` does: SQLite is migrated on the spot, PostgreSQL on purpose.
            await (upgrade(db) if db.is_sqlite else require_current(db))
            async with db.write() as conn:
                return await work(conn)
        finally:
            await db.close()

    try:
        return asyncio.run(main())
    except ConfigError as exc:
        fail(str(exc))
