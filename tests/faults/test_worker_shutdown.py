"""A worker told to stop stops, whatever it is doing: with sends in flight, while a rebalance
runs after another worker was killed, with the broker unreachable; a second SIGTERM exits at
once. Then nothing accepted is lost."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Deployment
from tests.faults.counts import post_all
from tests.herald_process import HeraldProcess
from tests.kafka_broker import TansuBroker
from tests.smtp_sink import SmtpSink

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]

SHUTDOWN_TIMEOUT = 5
# The supervisor's deadline is the drain plus EXIT_GRACE (10 s); a little slack on top.
DEADLINE = SHUTDOWN_TIMEOUT + 12
TUNING = {
    "HERALD_DELIVERY_LEASE_SECONDS": "3",
    "HERALD_SMTP_TIMEOUT_SECONDS": "2",
    "HERALD_RATE_LIMIT_PER_SECOND": "0",
    "HERALD_SHUTDOWN_TIMEOUT_SECONDS": str(SHUTDOWN_TIMEOUT),
}


def _bodies(count: int) -> list[dict[str, str]]:
    return [
        {
            "user_id": f"user-{i % 20}",
            "recipient": f"user{i % 20}@example.com",
            "subject": f"n{i}",
            "message": "hello",
        }
        for i in range(count)
    ]


def _terminate(process: HeraldProcess, within: float) -> tuple[int | None, float]:
    """SIGTERM; the exit code (None if still running after ``within``) and the time taken."""
    assert process.proc is not None
    started = time.monotonic()
    process.proc.send_signal(signal.SIGTERM)
    try:
        code: int | None = process.proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - started


async def _missing(sink: SmtpSink, ids: set[str], timeout: float = 120) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        missing = ids - {m.notification_id for m in sink.messages()}
        if not missing or time.monotonic() > deadline:
            return missing
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("when", ["before the group notices", "while a worker joins"])
async def test_sigterm_during_a_rebalance_after_a_kill_stops_in_time_and_loses_nothing(
    distributed: Deployment, smtp_sink: SmtpSink, when: str
) -> None:
    """One worker is killed; SIGTERM reaches another with sends in flight, either before the
    group notices the dead one (a 20 s session then) or once it has (3 s), while the
    partitions move to a worker that joins. The remaining workers end up with everything.

    (Not in between: Tansu, the test broker, never completes a rebalance when a member leaves
    while another one's session is expiring, and its groups stay stuck for good; Kafka
    expires the dead member. What Herald does then is report it: test_stalled_consumers.py.)
    """
    smtp_sink.delay = 0.2
    tuning = dict(TUNING)
    if when == "before the group notices":
        # A session long enough that the SIGTERM'd worker's drain and leave (up to ~7 s on a
        # slow machine) end well before the dead one expires: never in Tansu's window.
        tuning["HERALD_KAFKA_SESSION_TIMEOUT_MS"] = "20000"
    api = distributed.process(("api",), **tuning)
    relay = distributed.process(("relay",), **tuning)
    workers = [distributed.process(("worker",), name=f"worker{i}", **tuning) for i in (1, 2, 3)]
    joiner = distributed.process(("worker",), name="worker4", **tuning)
    try:
        api.start()
        for process in (relay, *workers):
            process.start(wait=False)
        for worker in workers:
            worker.wait_for_log("bus.assigned")
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
            accepted = set(await post_all(http, _bodies(300)))
        await smtp_sink.wait_for(20, timeout=60)
        workers[0].kill()
        if when == "before the group notices":
            await asyncio.sleep(1.0)
        else:
            await asyncio.sleep(10)  # the group has dropped the dead worker
            joiner.start(wait=False)
            joiner.wait_for_log("bus.assigned")
        code, took = _terminate(workers[1], DEADLINE)
        assert code is not None, f"still running {took:.0f}s after SIGTERM:\n{workers[1].log()}"
        assert code == 0, workers[1].log()[-3000:]
        lost = await _missing(smtp_sink, accepted)
        assert lost == set(), f"{len(lost)} accepted notifications never arrived"
        print(f"\nstopped {took:.1f}s after SIGTERM; delivered={len(accepted)}")
    finally:
        for process in (api, relay, *workers, joiner):
            process.stop()


async def test_sigterm_with_the_broker_unreachable_stops_in_time(
    distributed: Deployment, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    broker = TansuBroker(tmp_path).start()
    env = {**TUNING, "HERALD_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap}
    worker = distributed.process(("worker",), **env)
    try:
        worker.start(wait=False)
        worker.wait_for_log("bus.assigned")
        broker.stop()
        await asyncio.sleep(2)
        code, took = _terminate(worker, DEADLINE)
        assert code is not None, f"still running {took:.0f}s after SIGTERM:\n{worker.log()}"
        print(f"\nstopped {took:.1f}s after SIGTERM with the broker down (exit {code})")
    finally:
        worker.stop()
        broker.stop()


async def test_a_second_sigterm_exits_at_once(distributed: Deployment, smtp_sink: SmtpSink) -> None:
    """Sends that would outlast the drain: the first signal waits for them, the second
    does not."""
    smtp_sink.delay = 30  # every send hangs
    tuning = TUNING | {
        "HERALD_SHUTDOWN_TIMEOUT_SECONDS": "60",
        "HERALD_SMTP_TIMEOUT_SECONDS": "60",
        "HERALD_DELIVERY_LEASE_SECONDS": "90",
    }
    api = distributed.process(("api",), **tuning)
    relay = distributed.process(("relay",), **tuning)
    worker = distributed.process(("worker",), **tuning)
    try:
        api.start()
        relay.start(wait=False)
        worker.start(wait=False)
        worker.wait_for_log("bus.assigned")
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
            await post_all(http, _bodies(5))
        await smtp_sink.wait_for_data(1, timeout=30)
        code, _ = _terminate(worker, 1.0)
        assert code is None, "the first signal drains: the sends may take their time"
        code, _ = _terminate(worker, 3.0)
        assert code is not None, "a second SIGTERM must exit at once"
        assert code == 128 + signal.SIGTERM
        assert "supervisor.forced_stop" in worker.log()
    finally:
        for process in (api, relay, worker):
            process.stop()
