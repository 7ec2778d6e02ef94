"""Notifications per second for the FastAPI + Celery + Redis + smtplib baseline.

Starts benchmarks/baseline_app.py as two processes, uvicorn (the API) and a Celery worker
(prefork, one process per core by default), against the machine's Redis (its own key prefix,
deleted afterwards) and a local SMTP sink, then drives it with benchmarks/loadgen.py exactly
as throughput.py drives Herald. Prints the result and writes benchmarks/results/baseline.json.

    .venv/bin/python benchmarks/baseline_celery.py [--count 2000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

# harness first: it puts the repository root on sys.path, for `tests`.
from harness import RESULTS, ROOT, forget_redis_keys
from throughput import arrival_latency, first_arrivals, loadgen, wait_for

# isort: split
from tests.services import free_port
from tests.smtp_sink import SmtpSink

BROKER_URL = "redis://127.0.0.1:6379/15"  # a database of its own on the shared Redis


@dataclass
class Baseline:
    api_url: str
    sink: Any
    processes: list[subprocess.Popen[bytes]]


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        # A session of its own, so stopping it reaches Celery's pool children too.
        return subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"baseline API exited:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"baseline API not healthy:\n{log.read_text(errors='replace')}")


@contextmanager
def baseline(concurrency: int | None = None, sink: Any = None) -> Iterator[Baseline]:
    """The API and a Celery worker with `concurrency` processes (default: one per core); mail
    goes to `sink` (an object with `host` and `port`), or to a Python SmtpSink started here."""
    prefix = f"baseline-bench:{uuid.uuid4().hex[:8]}:"
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if sink is None:
            sink = SmtpSink()
            sink.start()
            stack.callback(sink.stop)
        stack.callback(forget_redis_keys, BROKER_URL, prefix)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "benchmarks"),
            "BASELINE_BROKER_URL": BROKER_URL,
            "BASELINE_KEY_PREFIX": prefix,
            "BASELINE_SMTP_HOST": sink.host,
            "BASELINE_SMTP_PORT": str(sink.port),
        }
        port = free_port()
        api_log, worker_log = workdir / "api.log", workdir / "worker.log"
        uvicorn = ["uvicorn", "baseline_app:api", "--host", "127.0.0.1", "--port", str(port)]
        api = _start(
            [sys.executable, "-m", *uvicorn, "--no-access-log", "--log-level", "warning"],
            env,
            api_log,
        )
        stack.callback(_stop, api)
        processes = str(concurrency or os.cpu_count() or 1)
        celery = ["celery", "-A", "baseline_app", "worker", "--hostname", "baseline@%h"]
        worker = _start(
            [sys.executable, "-m", *celery, "--pool", "prefork", "--concurrency", processes],
            env,
            worker_log,
        )
        stack.callback(_stop, worker)
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, api, api_log)
        try:
            yield Baseline(url, sink, [api, worker])
        except Exception:
            print(worker_log.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise


def measure_baseline(count: int, concurrency: int, workers: int | None = None) -> dict[str, object]:
    """Same protocol as throughput.measure(): warm up, then time first POST -> last arrival."""
    with baseline(workers) as app, tempfile.TemporaryDirectory() as tmp:
        # Warm up: also proves the worker is consuming (Celery has no health endpoint).
        assert loadgen(app.api_url, "--count", "50")["accepted"] == 50
        wait_for(50, app.sink, 120)
        before = len(app.sink.messages())
        accepted_file = Path(tmp) / "accepted.json"
        report = loadgen(
            app.api_url,
            "--count",
            str(count),
            "--concurrency",
            str(concurrency),
            "--accepted-out",
            str(accepted_file),
        )
        accepted = report["accepted"]
        assert isinstance(accepted, int)
        wait_for(before + accepted, app.sink, 600)
        arrived = app.sink.messages()[before:]
        accepted_at = json.loads(accepted_file.read_text())
    started, finished = report["started"], report["finished"]
    assert isinstance(started, float)
    assert isinstance(finished, float)
    elapsed = max(m.arrived for m in arrived) - started
    return {
        "deployment": "celery",
        "workers": workers or os.cpu_count() or 1,
        "notifications": accepted,
        "seconds": round(elapsed, 2),
        "per_second": round(accepted / elapsed, 1),
        "accept_per_second": round(accepted / (finished - started), 1),
        "post_ms": report["post_ms"],
        **arrival_latency(accepted_at, first_arrivals(arrived, "X-Notification-Id")),
        "failures": report["failures"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, help="Celery processes (default: cores)")
    args = parser.parse_args()
    os.chdir(ROOT)
    result = measure_baseline(args.count, args.concurrency, args.workers)
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "baseline.json").write_text(json.dumps(result, indent=2) + "\n")
    print("written to benchmarks/results/baseline.json")


if __name__ == "__main__":
    main()
