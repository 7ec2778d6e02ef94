"""Start Herald deployments for benchmarks: embedded (one process) or distributed (roles apart).

The distributed deployment runs on the machine's PostgreSQL (a database of its own, dropped
afterwards), the machine's Redis (a key prefix of its own) and a Tansu Kafka broker started
here. Only loopback addresses are used.

A benchmark measures the steady state: after its warm-up it calls ``Deployment.analyze``.
PostgreSQL plans a prepared statement with the statistics of the moment; in a new database
those say the tables are empty, so the plans made in the first seconds scan whole tables and
are kept until autovacuum's ANALYZE, which comes about a minute in (its naptime). A deployment
that has run for a minute has index plans; a ten-second run would measure the scans (a third
of PostgreSQL's CPU per notification in the distributed deployment). Herald itself analyzes
its young tables as they grow (store/table_statistics), but checks every two seconds and
analyzes again only when a table has quadrupled: a ten-second run still sees some of the scans.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.herald_process import HeraldProcess  # noqa: E402
from tests.kafka_broker import TansuBroker  # noqa: E402
from tests.services import POSTGRES_ADMIN_URL  # noqa: E402
from tests.smtp_sink import SmtpSink  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class Deployment:
    kind: str
    api_url: str
    sink: Any  # the Python SmtpSink, or the one the caller gave (native_tools.CSink)
    processes: list[HeraldProcess] = field(default_factory=list)
    database_url: str | None = None  # PostgreSQL's (distributed)

    def analyze(self) -> None:
        """Refresh the database's statistics, as autovacuum does a minute into a new database
        (see the module docstring): plans are made again with them. SQLite: nothing to do."""
        if self.database_url is not None:
            asyncio.run(_execute(self.database_url, "ANALYZE"))


async def _admin(statement: str) -> None:
    await _execute(POSTGRES_ADMIN_URL, statement)


async def _execute(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def forget_redis_keys(url: str, prefix: str) -> None:
    """Delete a run's keys from the shared Redis (idempotency records would linger a day)."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


@contextmanager
def postgres_database() -> Iterator[str]:
    name = f"herald_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def deployment(
    kind: str, *, workers: int = 1, env: dict[str, str] | None = None, sink: Any = None
) -> Iterator[Deployment]:
    """`kind` is "embedded" (herald serve, SQLite) or "distributed" (api, relay, N workers);
    mail goes to `sink` (an object with a `url`), or to a Python SmtpSink started here."""
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if sink is None:
            sink = SmtpSink()
            sink.start()
            stack.callback(sink.stop)
        base = {"HERALD_SMTP_URL": sink.url, **(env or {})}

        def started(process: HeraldProcess, wait: bool = True) -> HeraldProcess:
            stack.callback(process.stop)
            return process.start(wait=wait)

        if kind == "embedded":
            serve = started(HeraldProcess(workdir, base))
            yield Deployment(kind, serve.url, sink, [serve])
            return

        broker = TansuBroker(workdir).start()
        stack.callback(broker.stop)
        database_url = stack.enter_context(postgres_database())
        prefix = f"herald-bench:{uuid.uuid4().hex[:8]}:"
        stack.callback(forget_redis_keys, REDIS_URL, prefix)
        base |= {
            "HERALD_DATABASE_URL": database_url,
            "HERALD_BUS": "kafka",
            "HERALD_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "HERALD_KAFKA_PARTITIONS": "8",
            "HERALD_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "HERALD_REDIS_URL": REDIS_URL,
            "HERALD_REDIS_PREFIX": prefix,
        }
        migrate = HeraldProcess(workdir, base, command=("migrate",), name="migrate").start(
            wait=False
        )
        assert migrate.proc is not None
        assert migrate.proc.wait(60) == 0, migrate.log()
        api = started(HeraldProcess(workdir, base, command=("api",), name="api"))
        relay = started(HeraldProcess(workdir, base, command=("relay",), name="relay"), wait=False)
        pool = [
            started(
                HeraldProcess(workdir, base, command=("worker",), name=f"worker{i}"), wait=False
            )
            for i in range(workers)
        ]
        for process in pool:
            wait_until_assigned(process, groups=3)
        yield Deployment(kind, api.url, sink, [api, relay, *pool], database_url)


def wait_until_assigned(process: HeraldProcess, groups: int, timeout: float = 90) -> None:
    """Until the worker holds partitions in each of its consumer groups (rebalances done)."""
    deadline = time.monotonic() + timeout
    while True:
        totals: dict[str, int] = {}
        for line in process.log().splitlines():
            event = _rebalance(line)
            if event:
                totals[event[0]] = event[1]
        if len(totals) >= groups and all(totals.values()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{process.name} never got partitions: {totals}")
        time.sleep(0.2)


_ASSIGNED = re.compile(r"bus\.assigned group=(?P<group>\S+) added=\d+ total=(?P<total>\d+)")
_REVOKED = re.compile(r"bus\.revoked group=(?P<group>\S+)")


def _rebalance(line: str) -> tuple[str, int] | None:
    """(group, partitions held now) from a bus.assigned/bus.revoked log line, else None.

    Herald logs JSON when not on a terminal, text on one; both are understood."""
    if line.startswith("{"):
        try:
            entry = json.loads(line)
        except ValueError:
            return None
        if entry.get("event") == "bus.assigned":
            return str(entry["group"]), int(entry["total"])
        if entry.get("event") == "bus.revoked":
            return str(entry["group"]), 0
        return None
    match = _ASSIGNED.search(line) or _REVOKED.search(line)
    if match is None:
        return None
    return match["group"], int(match["total"]) if "total" in match.groupdict() else 0
