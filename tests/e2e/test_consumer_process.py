"""`herald serve` with its consumers in a second process (HERALD_SERVE_CONSUMER_PROCESS):
one service to the outside (one port, one /metrics, one /readyz, one log), two cores inside;
neither process outlives the other."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Deployment, _deployment
from tests.herald_process import HeraldProcess
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.slow

URL = "/api/v1/notifications"


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _metric(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture
def embedded_split(
    request: pytest.FixtureRequest, smtp_sink: SmtpSink, tmp_path: Path
) -> Iterator[tuple[HeraldProcess, int]]:
    """How the two processes start and stop does not depend on the bus: SQLite only."""
    yield from _split(_deployment("embedded", request, smtp_sink, tmp_path))


@pytest.fixture
def split(deployment: Deployment) -> Iterator[tuple[HeraldProcess, int]]:
    yield from _split(deployment)


def _split(deployment: Deployment) -> Iterator[tuple[HeraldProcess, int]]:
    # A long poll: a notification only arrives quickly if the link wakes the consumers.
    env = {"HERALD_SERVE_CONSUMER_PROCESS": "on", "HERALD_POLL_INTERVAL_SECONDS": "10"}
    herald = deployment.process(**env).start()
    assert herald.proc is not None
    herald.wait_for_log("consumer_process.started")
    [child] = _children(herald.proc.pid)
    yield herald, child
    herald.stop()
    if _alive(child):
        os.kill(child, signal.SIGKILL)


async def test_one_service_outside_two_processes_inside(
    split: tuple[HeraldProcess, int], smtp_sink: SmtpSink, deployment: Deployment
) -> None:
    herald, _child = split
    async with httpx.AsyncClient(base_url=herald.url, timeout=10) as http:
        for _ in range(100):  # ready once the consumer process answers too
            ready = await http.get("/readyz")
            if ready.status_code == 200:
                break
            await asyncio.sleep(0.1)
        # Like one process's: the consumers' check comes from the consumer process.
        assert ready.json()["checks"] == {"database": "ok", "bus": "ok", "consumers": "ok"}
        sent = [
            await http.post(
                URL, json={"recipient": f"u{i}@example.com", "subject": "s", "message": "hi"}
            )
            for i in range(20)
        ]
        assert {r.status_code for r in sent} == {202}
        mails = await smtp_sink.wait_for(20, timeout=20)  # woken, not polled (10 s)
        # The worker counts an outcome once its commit is done, which can come after the
        # mail has arrived: wait for the count, then check it exactly.
        for _ in range(100):
            metrics = await http.get("/metrics")
            sent_count = _metric(
                metrics.text, "herald_deliveries_total", channel="email", status="SENT"
            )
            if sent_count >= 20:
                break
            await asyncio.sleep(0.1)

    assert sorted(m.notification_id for m in mails) == sorted(r.json()["id"] for r in sent)
    assert metrics.status_code == 200
    # From the API's process and from the consumer process, in one text.
    assert _metric(metrics.text, "herald_http_requests_total", route=URL, code="202") == 20
    assert _metric(metrics.text, "herald_notifications_accepted_total") == 20
    assert _metric(metrics.text, "herald_deliveries_total", channel="email", status="SENT") == 20
    assert "herald_consumer_lag" in metrics.text
    events = herald.events()
    consumers = [e for e in events if e.get("process") == "consumers"]
    assert {e["event"] for e in consumers} >= {"runtime.started", "supervisor.started"}
    started = {
        str(e.get("process", "serve")): str(e["roles"])
        for e in events
        if e["event"] == "supervisor.started"
    }
    # On PostgreSQL, also the young tables' statistics kept fresh (store/table_statistics).
    sqlite = deployment.database_url.startswith("sqlite")
    housekeeping = "maintenance" if sqlite else "maintenance,statistics"
    assert started["serve"] == f"api,relay,{housekeeping},consumers,sampler"
    assert started["consumers"].startswith("router,status,")
    assert {"link", "metrics"} <= set(started["consumers"].split(","))


def test_sigterm_stops_both_gracefully(embedded_split: tuple[HeraldProcess, int]) -> None:
    herald, child = embedded_split

    assert herald.terminate() == 0

    assert _gone_within(child, 5)
    stopped = [e for e in herald.events() if e["event"] == "supervisor.stopped"]
    assert sorted((str(e.get("process", "serve")), e["exit_code"]) for e in stopped) == [
        ("consumers", 0),
        ("serve", 0),
    ]


def test_the_consumer_process_dies_with_herald_serve(
    embedded_split: tuple[HeraldProcess, int],
) -> None:
    herald, child = embedded_split

    herald.kill()  # kill -9: no chance to stop its child

    assert _gone_within(child, 10)


def test_herald_serve_stops_when_its_consumer_process_dies(
    embedded_split: tuple[HeraldProcess, int],
) -> None:
    herald, child = embedded_split

    os.kill(child, signal.SIGKILL)

    assert herald.proc is not None
    assert herald.proc.wait(timeout=40) == 1  # exit 1, for the process manager to restart it
    [died] = [e for e in herald.events() if e["event"] == "supervisor.role_died"]
    assert died["role"] == "consumers"
    assert "the consumer process ended with exit code" in str(died["error"])


async def test_off_keeps_everything_in_one_process(
    deployment: Deployment, smtp_sink: SmtpSink
) -> None:
    herald = deployment.process(HERALD_SERVE_CONSUMER_PROCESS="off").start()
    try:
        assert herald.proc is not None
        async with httpx.AsyncClient(base_url=herald.url, timeout=10) as http:
            posted = await http.post(
                URL, json={"recipient": "a@example.com", "subject": "s", "message": "hi"}
            )
            assert posted.status_code == 202
            await smtp_sink.wait_for(1, timeout=20)
            assert (await http.get("/readyz")).json()["checks"]["consumers"] == "ok"
        assert _children(herald.proc.pid) == []
    finally:
        herald.stop()
