"""SQLite statements run on the event loop (store/sqlite_inline.py): what may wait — another
process's write lock, a slow commit's fsync — must not stop the loop, a fast commit runs on it,
and a transaction that failed or was cancelled must leave the one connection ready for the
next."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from herald.store import sqlite_inline
from herald.store.database import Database


@pytest.fixture
async def db(fresh_sqlite_url: str) -> AsyncIterator[Database]:
    database = Database(fresh_sqlite_url, sqlite_synchronous="NORMAL")
    async with database.write() as conn:
        await conn.exec_driver_sql("CREATE TABLE words (word TEXT NOT NULL)")
    yield database
    await database.close()


def other_process(url: str) -> sqlite3.Connection:
    """A connection of its own, as `herald keys create` or a second process would have."""
    other = sqlite3.connect(sa.make_url(url).database or "", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # holds the write lock until it ends
    return other


async def words(db: Database) -> list[str]:
    async with db.read() as conn:
        return list((await conn.execute(sa.text("SELECT word FROM words"))).scalars())


async def add(db: Database, word: str) -> None:
    async with db.write() as conn:
        await conn.execute(sa.text("INSERT INTO words VALUES (:w)"), {"w": word})


async def ticks_during(seconds: float, task: asyncio.Task[Any]) -> int:
    """How often the loop ran another coroutine (every 10 ms) while ``task`` waited."""
    ticks = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        ticks += 1
    assert not task.done()
    return ticks


async def test_a_write_waits_for_another_processes_lock_without_stopping_the_loop(
    db: Database, fresh_sqlite_url: str
) -> None:
    other = other_process(fresh_sqlite_url)
    writing = asyncio.create_task(add(db, "after"))
    assert await ticks_during(0.5, writing) >= 25  # SQLite's own busy wait would give ~0
    other.execute("INSERT INTO words VALUES ('first')")
    other.execute("COMMIT")
    await asyncio.wait_for(writing, 2)
    assert await words(db) == ["first", "after"]


async def test_a_write_gives_up_on_a_lock_held_too_long_and_the_next_one_works(
    db: Database, fresh_sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_inline, "LOCK_WAIT_SECONDS", 0.3)
    other = other_process(fresh_sqlite_url)
    started = time.monotonic()
    with pytest.raises(sa.exc.OperationalError, match="locked"):
        await add(db, "refused")
    assert time.monotonic() - started >= 0.3
    other.execute("ROLLBACK")
    await add(db, "accepted")
    assert await words(db) == ["accepted"]


async def test_a_failed_transaction_rolls_back_and_the_next_one_commits(db: Database) -> None:
    async def fails_halfway() -> None:
        async with db.write() as conn:
            await conn.execute(sa.text("INSERT INTO words VALUES ('lost')"))
            await conn.execute(sa.text("INSERT INTO no_such_table VALUES (1)"))

    with pytest.raises(sa.exc.OperationalError):
        await fails_halfway()
    await add(db, "kept")
    assert await words(db) == ["kept"]


def slow_disk(db: Database, monkeypatch: pytest.MonkeyPatch, seconds: float) -> _SlowCommits:
    """Commits on the committer thread, each ``seconds`` long, as after slow ones."""
    slow = _SlowCommits(seconds)
    monkeypatch.setattr(db._backend, "_committer", slow)
    monkeypatch.setattr(db._backend, "commit_seconds", seconds)
    return slow


async def test_fast_commits_run_on_the_loop_and_slow_ones_off_it(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    committer = _SlowCommits(0)
    monkeypatch.setattr(db._backend, "_committer", committer)
    await add(db, "fast")
    assert committer.calls == 0  # an fsync of this disk: on the loop
    timed_commit = sqlite_inline._timed_commit

    def slow_commit(conn: sa.Connection) -> float:
        time.sleep(0.05)  # the disk slows down
        return timed_commit(conn) + 0.05

    monkeypatch.setattr(sqlite_inline, "_timed_commit", slow_commit)
    await add(db, "slow")  # still on the loop: the average said fast
    assert committer.calls == 0
    await add(db, "after")  # the average moved past INLINE_COMMIT_SECONDS: off the loop
    assert committer.calls == 1
    assert await words(db) == ["fast", "slow", "after"]


async def test_a_loop_of_writes_lets_other_tasks_run(db: Database) -> None:
    """A commit on the loop does not wait, so a write must still yield: a relay retrying in a
    loop of writes starved the task that reads Kafka's acknowledgements (a test timed out)."""
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    for i in range(20):
        await add(db, f"w{i}")
    task.cancel()
    assert turns >= 20


async def test_slow_commits_run_off_the_loop(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = slow_disk(db, monkeypatch, 0.3)
    writing = asyncio.create_task(add(db, "slow"))
    assert await ticks_during(0.2, writing) >= 10
    await writing
    assert slow.calls == 1
    assert await words(db) == ["slow"]


async def test_a_write_cancelled_while_committing_frees_the_connection_only_when_done(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = slow_disk(db, monkeypatch, 0.3)
    first = asyncio.create_task(add(db, "first"))
    await asyncio.sleep(0.1)  # the first is committing now
    assert slow.calls == 1
    first.cancel()
    second = asyncio.create_task(add(db, "second"))
    with pytest.raises(asyncio.CancelledError):
        await first
    assert slow.finished == 1  # the cancelled one let go only after its commit ended
    await second
    assert await words(db) == ["first", "second"]


class _SlowCommits(ThreadPoolExecutor):
    """The committer thread, each commit taking ``seconds`` longer (a slow disk)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(1)
        self.seconds = seconds
        self.calls = self.finished = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.calls += 1

        def slowly() -> Any:
            time.sleep(self.seconds)
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.finished += 1

        return super().submit(slowly)


async def test_the_writer_keeps_a_larger_page_cache_and_checkpoints_less_often(
    fresh_sqlite_url: str,
) -> None:
    """A batch dirties a page per notification in the recipient index: the writer keeps its
    indexes' pages in HERALD_SQLITE_CACHE_MB and checkpoints every CHECKPOINT_PAGES, not
    SQLite's 2 MiB and 1 000 pages; readers keep SQLite's defaults."""
    database = Database(fresh_sqlite_url, sqlite_cache_mb=8)
    try:
        async with database.write() as conn:
            cache = await conn.scalar(sa.text("PRAGMA cache_size"))
            checkpoint = await conn.scalar(sa.text("PRAGMA wal_autocheckpoint"))
        async with database.read() as conn:
            read_cache = await conn.scalar(sa.text("PRAGMA cache_size"))
    finally:
        await database.close()
    assert (cache, checkpoint) == (-8 * 1024, sqlite_inline.CHECKPOINT_PAGES)
    assert sqlite_inline.CHECKPOINT_PAGES > 1000
    assert read_cache == -2000


def test_the_settings_default_cache_is_the_stores() -> None:
    from herald.config import Settings

    assert Settings.model_fields["sqlite_cache_mb"].default == sqlite_inline.CACHE_MB
