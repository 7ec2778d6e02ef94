"""Shared fixtures: a fresh database per test (SQLite or PostgreSQL), an SMTP sink, a runtime."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

from herald.config import Settings
from herald.runtime import Runtime
from herald.store.database import Database
from herald.store.migrate import upgrade
from tests.services import POSTGRES_ADMIN_URL, require_postgres, run_sync
from tests.smtp_sink import SmtpSink

RUN_ID = uuid.uuid4().hex[:8]
PG_TEMPLATE = f"herald_test_{RUN_ID}_template"


# -- databases ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "herald.db"

    async def build() -> None:
        db = Database(f"sqlite:///{path}")
        await upgrade(db)
        await db.close()

    run_sync(build())
    return path


async def _pg_admin(*statements: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def pg_url(database: str) -> str:
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database migrated once per run; each test clones it."""
    require_postgres()
    run_sync(_pg_admin(f'CREATE DATABASE "{PG_TEMPLATE}"'))

    async def migrate() -> None:
        db = Database(pg_url(PG_TEMPLATE))
        await upgrade(db)
        await db.close()

    try:
        run_sync(migrate())
        yield PG_TEMPLATE
    finally:
        run_sync(_pg_admin(f'DROP DATABASE IF EXISTS "{PG_TEMPLATE}" WITH (FORCE)'))


@contextmanager
def scratch_database(template: str | None = None) -> Iterator[str]:
    """A database of this test's own, dropped afterwards."""
    name = f"herald_test_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    clone = f' TEMPLATE "{template}"' if template else ""
    run_sync(_pg_admin(f'CREATE DATABASE "{name}"{clone}'))
    try:
        yield pg_url(name)
    finally:
        run_sync(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def fresh_pg_url(pg_template: str) -> Iterator[str]:
    """A migrated, empty database."""
    with scratch_database(pg_template) as url:
        yield url


@pytest.fixture
def blank_pg_url() -> Iterator[str]:
    """An empty database: no schema at all."""
    require_postgres()
    with scratch_database() as url:
        yield url


@pytest.fixture
def fresh_sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "herald.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty database: each test that uses it runs on SQLite and on PostgreSQL."""
    fixture = "fresh_sqlite_url" if request.param == "sqlite" else "fresh_pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url, sqlite_synchronous="NORMAL")
    yield database
    await database.close()


# -- SMTP --------------------------------------------------------------------------------


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


# -- a runtime and an HTTP client for it ---------------------------------------------------


def settings_for(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "sqlite_synchronous": "NORMAL",  # tests need no power-loss safety
        "poll_interval_seconds": 0.05,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def runtime(database_url: str) -> AsyncIterator[Runtime]:
    rt = Runtime(settings_for(database_url))
    await rt.start(migrate=False)
    yield rt
    await rt.close()


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    from herald.api.app import create_app

    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as http:
        yield http


@pytest.fixture(autouse=True)
def _no_herald_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from each test, never from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("HERALD_") and not name.startswith("HERALD_TEST_"):
            monkeypatch.delenv(name)
