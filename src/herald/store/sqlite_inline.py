"""SQLite driven from the event loop: statements run where they are awaited, commits in a thread.

A statement on SQLite takes microseconds. Handing each one to aiosqlite's thread and back (a
future, a queue, a thread wake-up, a loop wake-up, greenlet switches) cost several times the
statement: a transaction of three statements took 2.7 ms of CPU that way and 0.5 ms run
directly through SQLAlchemy's plain pysqlite dialect. So statements run on the loop thread,
and only what may wait on the disk or on another process leaves it or yields:

- COMMIT (an fsync with ``synchronous=FULL``) runs on the loop while commits are fast (under
  ``INLINE_COMMIT_SECONDS`` on average: an SSD's fsync, or ``synchronous=NORMAL``), and on a
  thread of its own while they are slow, so the loop goes on serving meanwhile. The hop costs
  more than a fast commit: the thread's result waits for the loop, busy with other work, and
  the one writing connection (with the database's write lock) waits with it;
- BEGIN IMMEDIATE never waits inside SQLite (the writer's ``busy_timeout`` is 0): while another
  process (a CLI command) holds the write lock, the transaction sleeps on the loop and tries
  again, for up to ``LOCK_WAIT_SECONDS``.

Results are buffered (``prebuffer_rows``), so a result outlives its statement and no
statement yields to the loop halfway: coroutines can share the one reading connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import event

from herald.store.json_text import json_text

P = ParamSpec("P")
T = TypeVar("T")

# How long a transaction waits for another process's write lock before failing.
LOCK_WAIT_SECONDS = 30.0
# A reader waits inside SQLite only in rare moments (WAL recovery); it blocks the loop then.
_READER_BUSY_MS = 1000
# Commits faster than this on average run on the loop; slower ones on the committer thread.
INLINE_COMMIT_SECONDS = 0.002
_LEARNING_RATE = 0.2  # of the average's moving, per commit
# The writer checkpoints the WAL into the database once it holds this many pages (40 MiB;
# SQLite's default is 1 000). A batch of a thousand notifications dirties about a page per
# notification in the recipient index (its entries lie all over it), so with the default every
# such commit also checkpointed, writing each page twice; checkpointing a tenth as often
# writes a page rewritten by ten commits once. With a page cache that holds the indexes' hot
# pages (HERALD_SQLITE_CACHE_MB; SQLite's default is 2 MiB), SQLite's own time for a stored
# notification at 100 MB of database went from 43 to 26 µs (a test outside Herald).
CHECKPOINT_PAGES = 10_000
CACHE_MB = 64  # the writer's page cache unless told (HERALD_SQLITE_CACHE_MB's default)


class SqliteConnection:
    """The awaitable face of a plain SQLAlchemy connection (what the stores call)."""

    def __init__(self, sync: sa.Connection) -> None:
        self.sync = sync
        self.dialect = sync.dialect

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self.sync.execute(statement, parameters)

    async def scalar(self, statement: Any, parameters: Any = None) -> Any:
        return self.sync.scalar(statement, parameters)

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> Any:
        return self.sync.exec_driver_sql(statement, parameters)

    async def run_sync(
        self, fn: Callable[Concatenate[sa.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        return fn(self.sync, *args, **kwargs)


class SqliteDatabase:
    """One writing connection (its transactions one at a time) and one reading connection."""

    def __init__(self, url: sa.URL, synchronous: str, *, cache_mb: int = CACHE_MB) -> None:
        writing = (f"cache_size=-{cache_mb * 1024}", f"wal_autocheckpoint={CHECKPOINT_PAGES}")
        self.write_engine = _engine(url, synchronous, busy_ms=0, immediate=True, more=writing)
        self.read_engine = _engine(url, synchronous, busy_ms=_READER_BUSY_MS, immediate=False)
        self._writer: sa.Connection | None = None
        self._reader: sa.Connection | None = None
        self._write_turn = asyncio.Lock()
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-commit")
        self.commit_seconds = 0.0  # a moving average of how long commits take

    @asynccontextmanager
    async def write(self) -> AsyncIterator[SqliteConnection]:
        async with self._write_turn:
            conn = await self._begin()
            try:
                yield SqliteConnection(conn)
            except BaseException:
                conn.rollback()
                raise
            await self._commit(conn)
        # A commit on the loop never waits: other tasks still get their turn here, as they
        # did while the commit was on the thread (a loop of writes would starve them).
        await asyncio.sleep(0)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SqliteConnection]:
        conn = self._reading()
        try:
            yield SqliteConnection(conn)
        finally:
            conn.rollback()  # ends SQLAlchemy's autobegun transaction; SQLite had none open

    async def close(self) -> None:
        for conn in (self._writer, self._reader):
            if conn is not None:
                conn.close()
        self._writer = self._reader = None
        self._committer.shutdown(wait=True)
        self.write_engine.dispose()
        self.read_engine.dispose()

    async def _begin(self) -> sa.Connection:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        pause = 0.001
        while True:
            conn = self._writing()
            try:
                conn.begin()  # BEGIN IMMEDIATE (see _engine): takes the write lock or fails
                return conn
            except sa.exc.OperationalError as exc:
                if not _locked(exc) or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.004)

    async def _commit(self, conn: sa.Connection) -> None:
        if self.commit_seconds < INLINE_COMMIT_SECONDS:
            try:
                self._learn(_timed_commit(conn))
            except BaseException:
                conn.rollback()
                raise
            return
        committing = asyncio.get_running_loop().run_in_executor(
            self._committer, _timed_commit, conn
        )
        try:
            self._learn(await asyncio.shield(committing))
        except asyncio.CancelledError:
            # The commit goes on in its thread; the connection is not free until it ends.
            while not committing.done():
                try:
                    await asyncio.wait([committing])
                except asyncio.CancelledError:
                    continue
            raise
        except BaseException:
            conn.rollback()
            raise

    def _learn(self, seconds: float) -> None:
        self.commit_seconds += (seconds - self.commit_seconds) * _LEARNING_RATE

    def _writing(self) -> sa.Connection:
        self._writer = _live(self._writer, self.write_engine)
        return self._writer

    def _reading(self) -> sa.Connection:
        self._reader = _live(self._reader, self.read_engine)
        return self._reader


def _timed_commit(conn: sa.Connection) -> float:
    """Commit; how long it took."""
    started = time.perf_counter()
    conn.commit()
    return time.perf_counter() - started


def _live(conn: sa.Connection | None, engine: sa.Engine) -> sa.Connection:
    """``conn``, or a new connection if there is none or it broke."""
    if conn is None or conn.closed or conn.invalidated:
        return engine.connect()
    return conn


def _locked(exc: sa.exc.OperationalError) -> bool:
    return getattr(exc.orig, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED")


def _engine(
    url: sa.URL, synchronous: str, *, busy_ms: int, immediate: bool, more: tuple[str, ...] = ()
) -> sa.Engine:
    """``more``: further pragmas for its connections."""
    engine = sa.create_engine(
        url,
        poolclass=sa.pool.StaticPool,  # one connection, kept (see SqliteDatabase)
        connect_args={"check_same_thread": False},  # commits run on the committer thread
        pool_reset_on_return=None,  # transactions are ended by their owner
        json_serializer=json_text,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            f"synchronous={synchronous}",
            f"busy_timeout={busy_ms}",
            "foreign_keys=ON",
            *more,
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    if immediate:

        @event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine.execution_options(prebuffer_rows=True)
