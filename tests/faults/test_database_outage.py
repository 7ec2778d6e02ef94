"""PostgreSQL goes away for a moment: a private server of this test's own is stopped and started."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import kafka_settings
from tests.faults.counts import URL, count, settle
from tests.herald_process import HeraldProcess
from tests.kafka_broker import TansuBroker
from tests.services import PrivatePostgres
from tests.smtp_sink import SmtpSink

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    # Not under pytest's own temporary folders: the postgres user must be able to enter it.
    workdir = Path(tempfile.mkdtemp(prefix="herald-pg-"))
    os.chmod(workdir, 0o755)
    server = PrivatePostgres(workdir).init().start()
    try:
        yield server
    finally:
        with contextlib.suppress(RuntimeError):  # already stopped
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus_env(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "embedded":
        return {}
    broker: TansuBroker = request.getfixturevalue("kafka_broker")
    settings = kafka_settings(broker.bootstrap, request.getfixturevalue("topic_prefix"))
    return {f"HERALD_{k.upper()}": str(v) for k, v in settings.items()}


def body(tag: str, i: int) -> dict[str, str]:
    return {"recipient": f"{tag}{i}@example.com", "subject": f"{tag}{i}", "message": "x"}


async def test_the_api_says_503_meanwhile_and_nothing_accepted_is_lost(
    private_postgres: PrivatePostgres,
    bus_env: dict[str, str],
    smtp_sink: SmtpSink,
    tmp_path: Path,
) -> None:
    env = {
        "HERALD_DATABASE_URL": private_postgres.url,
        "HERALD_SMTP_URL": smtp_sink.url,
        "HERALD_RATE_LIMIT_PER_SECOND": "0",
        **bus_env,
    }
    migrate = HeraldProcess(tmp_path, env, command=("migrate",), name="migrate").start(wait=False)
    assert migrate.proc is not None
    assert migrate.proc.wait(60) == 0, migrate.log()
    herald = HeraldProcess(tmp_path, env).start()
    accepted: list[str] = []
    during: list[int] = []
    try:
        async with httpx.AsyncClient(base_url=herald.url, timeout=30) as http:
            for i in range(10):
                accepted.append((await http.post(URL, json=body("before", i))).json()["id"])

            private_postgres.stop()
            for i in range(10):
                response = await http.post(URL, json=body("during", i))
                during.append(response.status_code)
                if response.status_code == 202:
                    accepted.append(response.json()["id"])
            ready = await http.get("/readyz")

            private_postgres.start()
            for i in range(10):
                for _ in range(50):  # a client retrying after a 503, as told by Retry-After
                    response = await http.post(URL, json=body("after", i))
                    if response.status_code == 202:
                        accepted.append(response.json()["id"])
                        break
                    assert response.status_code == 503
                    await asyncio.sleep(0.2)
            views = await settle(http, accepted, timeout=90)
    finally:
        herald.stop()

    counts = count(smtp_sink, views)
    print(f"\n{counts} answers_during_outage={sorted(set(during))}")
    assert set(during) == {503}  # never a 500, and nothing claimed to be stored
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] != "ok"
    assert (counts.accepted, counts.delivered, counts.lost, counts.retrying) == (20, 20, 0, 0)
