"""Shared fixtures: a fresh database per test (SQLite or PostgreSQL), an SMTP sink, a runtime."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from herald.config import Settings
from herald.runtime import Runtime
from herald.store.database import Database
from herald.store.migrate import upgrade
from tests.herald_process import HeraldProcess
from tests.kafka_broker import TansuBroker
from tests.services import (
    POSTGRES_ADMIN_URL,
    REDIS_HOST,
    REDIS_PORT,
    PrivateRedis,
    require_postgres,
    require_redis,
    run_sync,
)
from tests.smtp_sink import SmtpSink

RUN_ID = uuid.uuid4().hex[:8]
# The fakes that stand in for webhook receivers and push services listen on loopback, which
# Herald refuses to contact unless allowed (see herald.outbound): every test setup allows it.
TEST_OUTBOUND_ALLOW = "127.0.0.0/8,::1"
SHARED_REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
PG_TEMPLATE = f"herald_test_{RUN_ID}_template"


# -- diagnostics -------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that ran Herald processes shows the end of each one's log: a hang in CI
    (a pytest-timeout) is otherwise unexplained."""
    outcome = yield
    report = outcome.get_result()
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if report.when != "call" or not report.failed or not isinstance(tmp_path, Path):
        return
    for log in sorted(tmp_path.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-80:]
        report.sections.append((f"last lines of {log.name}", "\n".join(tail)))


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


# -- Kafka -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """One broker for the run; tests keep apart by topic prefix and group names."""
    broker = TansuBroker(tmp_path_factory.mktemp("tansu")).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


def kafka_settings(bootstrap: str, prefix: str) -> dict[str, object]:
    """Settings for a Kafka deployment in the tests (fast group joins and failover)."""
    return {
        "bus": "kafka",
        "kafka_bootstrap_servers": bootstrap,
        "kafka_partitions": 4,
        "kafka_session_timeout_ms": 3000,
        "topic_prefix": prefix,
    }


# -- Redis -------------------------------------------------------------------------------


async def _delete_keys(prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(SHARED_REDIS_URL)
    keys = [k async for k in client.scan_iter(f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis; its keys are deleted afterwards."""
    require_redis()
    prefix = f"herald-test:{RUN_ID}:{uuid.uuid4().hex[:8]}:"
    yield prefix
    run_sync(_delete_keys(prefix))


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    yield server
    server.stop()


# -- deployments: the same tests on the embedded default and on Kafka + PostgreSQL + Redis --


@dataclass
class Deployment:
    name: str
    database_url: str
    env: dict[str, str]
    workdir: Path

    def process(
        self, command: tuple[str, ...] = ("serve",), name: str | None = None, **env: str
    ) -> HeraldProcess:
        return HeraldProcess(
            self.workdir, {**self.env, **env}, command=command, name=name or command[0]
        )


@pytest.fixture(
    params=[
        "embedded",
        pytest.param(
            "distributed", marks=[pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]
        ),
    ]
)
def deployment(request: pytest.FixtureRequest, smtp_sink: SmtpSink, tmp_path: Path) -> Deployment:
    """Each deployment in turn: the tests using it must pass on both."""
    return _deployment(request.param, request, smtp_sink, tmp_path)


@pytest.fixture
def distributed(request: pytest.FixtureRequest, smtp_sink: SmtpSink, tmp_path: Path) -> Deployment:
    """Kafka + PostgreSQL + Redis, for tests about scaling out."""
    return _deployment("distributed", request, smtp_sink, tmp_path)


def _deployment(
    kind: str, request: pytest.FixtureRequest, smtp_sink: SmtpSink, tmp_path: Path
) -> Deployment:
    if kind == "embedded":
        url = request.getfixturevalue("fresh_sqlite_url")
        env = {"HERALD_SQLITE_SYNCHRONOUS": "NORMAL"}
    else:
        url = request.getfixturevalue("fresh_pg_url")
        broker: TansuBroker = request.getfixturevalue("kafka_broker")
        kafka = kafka_settings(broker.bootstrap, request.getfixturevalue("topic_prefix"))
        env = {f"HERALD_{k.upper()}": str(v) for k, v in kafka.items()}
        env |= {
            "HERALD_REDIS_URL": SHARED_REDIS_URL,
            "HERALD_REDIS_PREFIX": request.getfixturevalue("redis_prefix"),
        }
    env |= {
        "HERALD_DATABASE_URL": url,
        "HERALD_SMTP_URL": smtp_sink.url,
        "HERALD_OUTBOUND_ALLOW": TEST_OUTBOUND_ALLOW,
    }
    return Deployment(kind, url, env, tmp_path)


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
        "outbound_allow": TEST_OUTBOUND_ALLOW,
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

    transport = httpx.ASGITransport(app=create_app(runtime, open_access=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        yield http


@pytest.fixture(autouse=True)
def _no_herald_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from each test, never from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("HERALD_") and not name.startswith("HERALD_TEST_"):
            monkeypatch.delenv(name)


# The running pipeline, shared by several test modules.
from tests.pipeline_harness import pipeline, start_pipeline  # noqa: E402, F401
