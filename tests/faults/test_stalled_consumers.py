"""A consumer group that stops moving while messages wait makes its processes report not
ready (/readyz 503, herald_consumer_stalled 1), and ready again once it moves."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
import pytest

from tests.conftest import Deployment
from tests.faults.counts import post_all
from tests.herald_process import HeraldProcess
from tests.services import free_port
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.slow

STALL = {
    "HERALD_CONSUMER_STALL_SECONDS": "2",
    "HERALD_METRICS_SAMPLE_SECONDS": "0.5",
    "HERALD_RATE_LIMIT_PER_SECOND": "0",
    "HERALD_SMTP_TIMEOUT_SECONDS": "60",
    "HERALD_DELIVERY_LEASE_SECONDS": "90",
    "HERALD_SHUTDOWN_TIMEOUT_SECONDS": "2",
}


async def _readiness(http: httpx.AsyncClient, ready: bool, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        response = await http.get("/readyz")
        if (response.status_code == 200) == ready:
            return response.json()
        assert time.monotonic() < deadline, f"never {'ready' if ready else 'unready'}: {response}"
        await asyncio.sleep(0.2)


def _stalled(metrics: str, group_suffix: str) -> float | None:
    pattern = rf'herald_consumer_stalled\{{group="[^"]*{re.escape(group_suffix)}"\}} (\S+)'
    found = re.search(pattern, metrics)
    return None if found is None else float(found.group(1))


async def test_a_worker_whose_sends_hang_reports_not_ready_until_they_move(
    deployment: Deployment, smtp_sink: SmtpSink
) -> None:
    smtp_sink.delay = 3600  # every send hangs: nothing the email worker holds finishes
    processes: list[HeraldProcess]
    if deployment.name == "embedded":
        serve = deployment.process(**STALL)
        processes, probe = [serve], serve
    else:
        api = deployment.process(("api",), **STALL)
        relay = deployment.process(("relay",), **STALL)
        worker = deployment.process(("worker",), HERALD_METRICS_PORT=str(free_port()), **STALL)
        processes, probe = [api, relay, worker], worker
    try:
        processes[0].start()
        for process in processes[1:]:
            process.start(wait=False)
        probe_url = (
            probe.url
            if probe is processes[0]
            else f"http://127.0.0.1:{probe.env['HERALD_METRICS_PORT']}"
        )
        async with (
            httpx.AsyncClient(base_url=processes[0].url, timeout=30) as http,
            httpx.AsyncClient(base_url=probe_url, timeout=30) as health,
        ):
            if probe is not processes[0]:
                probe.wait_for_log("bus.assigned")
            await _readiness(health, ready=True)
            await post_all(
                http,
                [
                    {"recipient": f"u{i}@example.com", "subject": "Hi", "message": "x"}
                    for i in range(10)
                ],
            )
            unready = await _readiness(health, ready=False)
            for _ in range(50):  # the gauge follows at the next sample
                metrics = (await health.get("/metrics")).text
                if _stalled(metrics, "worker.email") == 1:
                    break
                await asyncio.sleep(0.2)
            # The sends finish: the group moves again.
            smtp_sink.delay = 0
            smtp_sink.stop()  # drops the hanging conversations; the sends fail and retry
            smtp_sink.start()
            ready = await _readiness(health, ready=True, timeout=60)
    finally:
        for process in processes:
            process.stop()
    assert "worker.email" in unready["checks"]["consumers"]
    assert _stalled(metrics, "worker.email") == 1
    assert ready["checks"]["consumers"] == "ok"
