"""Engines and transactions for SQLite (embedded) and PostgreSQL (distributed).

SQLite allows one writer at a time. Rather than let several connections fight over the lock
(and fail with SQLITE_BUSY when a read transaction tries to upgrade), every write goes through
one connection that starts with ``BEGIN IMMEDIATE``. Reads use a separate pool in autocommit
mode: each statement sees the latest commit, as under PostgreSQL's READ COMMITTED, and no
BEGIN/COMMIT round trips are spent on them (each costs a thread hop with aiosqlite).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from herald.errors import ConfigError
from herald.observability import metrics

# What a database that is down or unreachable raises (the API answers these with 503).
UNAVAILABLE_ERRORS = (OSError, sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)
# SQLSTATE classes of a PostgreSQL server that is down, starting, in crash recovery or out of
# resources: 08 connection exception, 53 insufficient resources, 57P operator intervention
# (57P01 shutting down, 57P02 crash of another process, 57P03 "the database system is in
# recovery mode" / "starting up"), 58 system error. psycopg raises OperationalError for them.
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P", "58")

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
_KNOWN_ASYNC = {"sqlite+aiosqlite", "postgresql+asyncpg", "postgresql+psycopg"}
# libpq query parameters that asyncpg spells differently.
_ASYNCPG_RENAMES = {"sslmode": "ssl", "connect_timeout": "timeout"}


def async_url(url: str) -> sa.URL:
    """Turn a plain database URL (as users write it) into one with an async driver."""
    if url.startswith("postgres://"):  # Heroku-style alias that SQLAlchemy does not accept
        url = "postgresql://" + url[len("postgres://") :]
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"HERALD_DATABASE_URL is not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend not in _ASYNC_DRIVERS:
        raise ConfigError(
            f"HERALD_DATABASE_URL: unsupported database {backend!r} (use sqlite or postgresql)"
        )
    driver = parsed.drivername
    if driver not in _KNOWN_ASYNC:
        parsed = parsed.set(drivername=_ASYNC_DRIVERS[backend])
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigError(
            "HERALD_DATABASE_URL: SQLite needs a file path, e.g. sqlite:///./herald.db"
        )
    if parsed.drivername == "postgresql+asyncpg":
        query = {_ASYNCPG_RENAMES.get(k, k): v for k, v in parsed.query.items()}
        parsed = parsed.set(query=query)
    return parsed


def _unavailable_as_operational(context: ExceptionContext) -> BaseException | None:
    """SQLAlchemy's asyncpg adapter raises a bare DBAPIError for the SQLSTATEs above (e.g. for
    asyncpg's CannotConnectNowError), which UNAVAILABLE_ERRORS misses: the API answered 500
    during crash recovery. Raise them as the OperationalError psycopg would."""
    error = context.sqlalchemy_exception
    state = getattr(context.original_exception, "sqlstate", None)
    if (
        not isinstance(error, sa.exc.DBAPIError)
        or isinstance(error, UNAVAILABLE_ERRORS)
        or not isinstance(state, str)
        or not state.startswith(_UNAVAILABLE_SQLSTATES)
    ):
        return None
    if state.startswith(("08", "57P")):
        context.is_disconnect = True  # the session is gone: discard the pool's connections
    return sa.exc.OperationalError(
        error.statement,
        error.params,
        context.original_exception,
        connection_invalidated=context.is_disconnect,
    )


class Database:
    """Owns the engines; ``write()`` and ``read()`` hand out connections inside a transaction."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 10) -> None:
        self.url = async_url(url)
        self.dialect = self.url.get_backend_name()
        self.commits = 0  # write transactions committed by this process
        if self.dialect == "sqlite":
            self._writer = self._sqlite_engine(sqlite_synchronous, pool_size=1, immediate=True)
            self._reader = self._sqlite_engine(sqlite_synchronous, pool_size=4, immediate=False)
        else:
            # No pre-ping: it costs a round trip per transaction. A connection that died with a
            # database restart fails once, SQLAlchemy then invalidates the pool, and callers
            # retry (the API answers 503, consumers retry the message).
            self._writer = create_async_engine(
                self.url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=3600
            )
            event.listen(self._writer.sync_engine, "handle_error", _unavailable_as_operational)
            self._reader = self._writer

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def _sqlite_engine(self, synchronous: str, *, pool_size: int, immediate: bool) -> AsyncEngine:
        engine = create_async_engine(
            self.url,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=120,
            # Writers always end their transaction themselves; readers never open one.
            pool_reset_on_return=None,
            skip_autocommit_rollback=not immediate,
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Take transaction control from the driver so BEGIN is ours to emit.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            for pragma in (
                "journal_mode=WAL",
                f"synchronous={synchronous}",
                "busy_timeout=30000",
                "foreign_keys=ON",
            ):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

        if immediate:

            @event.listens_for(engine.sync_engine, "begin")
            def _on_begin(conn: sa.Connection) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that may write; commits on exit, rolls back on error."""
        async with self._writer.begin() as conn:
            yield conn
        # Counted where commits happen: what batching saves shows here (and is tested).
        self.commits += 1
        metrics.db_commits.inc()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reading; each statement sees the latest committed data."""
        if self.is_sqlite:
            async with self._reader.connect() as conn:
                yield conn
        else:
            async with self._reader.begin() as conn:
                yield conn

    async def ping(self) -> None:
        async with self._reader.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        await self._writer.dispose()
        if self._reader is not self._writer:
            await self._reader.dispose()
