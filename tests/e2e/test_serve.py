"""`herald serve` as a real process, driven over HTTP, delivering to a real SMTP server."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Deployment
from tests.herald_process import HeraldProcess
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.slow

SEED = {"recipient": "a@example.com", "subject": "Welcome", "message": "Welcome to Herald"}
URL = "/api/v1/notifications"


@pytest.fixture
def herald(deployment: Deployment) -> Iterator[HeraldProcess]:
    process = deployment.process().start()
    yield process
    process.stop()


async def wait_until_done(http: httpx.AsyncClient, notification_id: str) -> dict[str, object]:
    for _ in range(1000):
        body: dict[str, object] = (await http.get(f"{URL}/{notification_id}")).json()
        if body["status"] != "PENDING":
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"{notification_id} still PENDING")


async def test_the_seed_request_arrives_as_one_email(
    herald: HeraldProcess, smtp_sink: SmtpSink
) -> None:
    async with httpx.AsyncClient(base_url=herald.url) as http:
        response = await http.post(URL, json=SEED)
        assert response.status_code == 202
        accepted = response.json()
        [mail] = await smtp_sink.wait_for(1)
        done = await wait_until_done(http, accepted["id"])
    assert mail.rcpt_tos == ["a@example.com"]
    assert mail.message["Subject"] == "Welcome"
    assert mail.notification_id == accepted["id"]
    assert done["status"] == "SENT"


async def test_twenty_concurrent_requests_with_one_key(
    herald: HeraldProcess, smtp_sink: SmtpSink
) -> None:
    async with httpx.AsyncClient(base_url=herald.url) as http:
        responses = await asyncio.gather(
            *(http.post(URL, json=SEED, headers={"Idempotency-Key": "once"}) for _ in range(20))
        )
        ids = {r.json()["id"] for r in responses}
        assert {r.status_code for r in responses} == {202}
        assert len(ids) == 1
        await wait_until_done(http, ids.pop())
        listed = (await http.get(URL)).json()["items"]
    assert len(listed) == 1
    assert len(smtp_sink.messages()) == 1


async def test_sigterm_stops_gracefully(herald: HeraldProcess) -> None:
    assert herald.terminate() == 0
    stopped = [e for e in herald.events() if e["event"] == "supervisor.stopped"]
    # `herald serve`'s own, and on more than one core its consumer process's (process=consumers)
    ours = [e for e in stopped if "process" not in e]
    assert ours == [ours[0]]
    assert {e["exit_code"] for e in stopped} == {0}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_is_graceful_even_with_a_thread_started_before_herald(
    deployment: Deployment, tmp_path: Path, signum: int
) -> None:
    """An agent loaded before Herald (sitecustomize, an APM's auto-instrumentation) may start
    a thread before Herald blocks the stop signals: the kernel then hands it the signal."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=lambda: time.sleep(3600), daemon=True).start()\n"
    )
    process = deployment.process(PYTHONPATH=str(site)).start()
    try:
        assert process.proc is not None
        process.proc.send_signal(signum)
        assert process.proc.wait(timeout=30) == 0, process.log()[-2000:]
    finally:
        process.stop()
    stopping = [e for e in process.events() if e["event"] == "supervisor.stopping"]
    # Not its consumer process's (process=consumers), which `herald serve` stops with SIGTERM.
    assert [e["signal"] for e in stopping if "process" not in e] == [signal.Signals(signum).name]
