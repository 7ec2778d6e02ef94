"""Engines and transactions for SQLite (embedded) and PostgreSQL (distributed).

SQLite allows one writer at a time. Rather than let several connections fight over the lock
(and fail with SQLITE_BUSY when a read transaction tries to upgrade), every write goes through
one connection that starts with ``BEGIN IMMEDIATE``. Reads use a separate connection in
autocommit mode: each statement sees the latest commit, as under PostgreSQL's READ COMMITTED.
SQLite's statements run on the event loop's thread (sqlite_inline says why); PostgreSQL's
through asyncpg.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Dialect, ExceptionContext
from sqlalchemy.ext.asyncio import create_async_engine

from herald.errors import ConfigError
from herald.observability import metrics
from herald.store import sqlite_inline
from herald.store.json_text import json_text
from herald.store.sqlite_inline import SqliteDatabase

T = TypeVar("T")

# What a database that is down or unreachable raises (the API answers these with 503).
UNAVAILABLE_ERRORS = (OSError, sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)
# SQLSTATE classes of a PostgreSQL server that is down, starting, in crash recovery or out of
# resources: 08 connection exception, 53 insufficient resources, 57P operator intervention
# (57P01 shutting down, 57P02 crash of another process, 57P03 "the database system is in
# recovery mode" / "starting up"), 58 system error. psycopg raises OperationalError for them.
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P", "58")

# SQLite through the stdlib's sqlite3 (see sqlite_inline), PostgreSQL through an async driver.
_DRIVERS = {"sqlite": "sqlite+pysqlite", "postgresql": "postgresql+asyncpg"}
_KNOWN = {"sqlite+pysqlite", "postgresql+asyncpg", "postgresql+psycopg"}
# libpq query parameters that asyncpg spells differently.
_ASYNCPG_RENAMES = {"sslmode": "ssl", "connect_timeout": "timeout"}


def driver_url(url: str) -> sa.URL:
    """Turn a plain database URL (as users write it) into one naming the driver Herald uses."""
    if url.startswith("postgres://"):  # Heroku-style alias that SQLAlchemy does not accept
        url = "postgresql://" + url[len("postgres://") :]
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"HERALD_DATABASE_URL is not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend not in _DRIVERS:
        raise ConfigError(
            f"HERALD_DATABASE_URL: unsupported database {backend!r} (use sqlite or postgresql)"
        )
    driver = parsed.drivername
    if driver not in _KNOWN:
        parsed = parsed.set(drivername=_DRIVERS[backend])
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


class Connection(Protocol):
    """What the stores run statements on: an AsyncConnection (PostgreSQL) or a
    SqliteConnection (SQLite, see sqlite_inline)."""

    @property
    def dialect(self) -> Dialect: ...

    async def execute(self, statement: Any, parameters: Any = None) -> Any: ...

    async def scalar(self, statement: Any, parameters: Any = None) -> Any: ...

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> Any: ...

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T: ...


class _Postgres:
    """PostgreSQL through asyncpg: a pool of connections, each transaction on one of them."""

    def __init__(self, url: sa.URL, pool_size: int) -> None:
        # No pre-ping: it costs a round trip per transaction. A connection that died with a
        # database restart fails once, SQLAlchemy then invalidates the pool, and callers
        # retry (the API answers 503, consumers retry the message).
        self.engine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_recycle=3600,
            json_serializer=json_text,
        )
        event.listen(self.engine.sync_engine, "handle_error", _unavailable_as_operational)
        self.read_engine = self.engine.sync_engine
        # Reads run each statement in its own transaction, as READ COMMITTED would see it
        # anyway, without the BEGIN and COMMIT round trips (the same pool).
        self._reads = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    def write(self) -> AbstractAsyncContextManager[Connection]:
        return self.engine.begin()

    def read(self) -> AbstractAsyncContextManager[Connection]:
        return self._reads.connect()

    async def close(self) -> None:
        await self.engine.dispose()


class Database:
    """Owns the engines; ``write()`` and ``read()`` hand out connections inside a transaction."""

    def __init__(
        self,
        url: str,
        *,
        sqlite_synchronous: str = "FULL",
        sqlite_cache_mb: int = sqlite_inline.CACHE_MB,
        pool_size: int = 10,
    ) -> None:
        self.url = driver_url(url)
        self.dialect = self.url.get_backend_name()
        self.commits = 0  # write transactions committed by this process
        self._backend: SqliteDatabase | _Postgres = (
            SqliteDatabase(self.url, sqlite_synchronous, cache_mb=sqlite_cache_mb)
            if self.dialect == "sqlite"
            else _Postgres(self.url, pool_size)
        )

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def read_engine(self) -> sa.Engine:
        """The engine reads go through (for event hooks that watch statements)."""
        return self._backend.read_engine

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Connection]:
        """A transaction that may write; commits on exit, rolls back on error."""
        async with self._backend.write() as conn:
            yield conn
        # Counted where commits happen: what batching saves shows here (and is tested).
        self.commits += 1
        metrics.db_commits.inc()

    def read(self) -> AbstractAsyncContextManager[Connection]:
        """A connection for reading; each statement sees the latest committed data."""
        return self._backend.read()

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        await self._backend.close()
