"""Notifications per second from POST to arrival at a local SMTP server.

Starts the distributed deployment (api, relay and N worker processes on Kafka, PostgreSQL and
Redis) for each worker count, drives it with benchmarks/loadgen.py in a separate process and
times from the first POST to the last email's arrival. Prints a table and writes
benchmarks/results/throughput.json.

    .venv/bin/python benchmarks/throughput.py [--workers 1 2] [--count 2000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import RESULTS, deployment  # first: puts the repo root on sys.path
from loadgen import percentile

# isort: split
from tests.smtp_sink import Received


def wait_for(sink_count: int, sink: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(sink.messages()) < sink_count:  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(sink.messages())} of {sink_count} arrived")  # type: ignore[attr-defined]
        time.sleep(0.05)


def loadgen(url: str, *args: str) -> dict[str, object]:
    """Run the load generator in a process of its own; its JSON report."""
    done = subprocess.run(
        [sys.executable, "benchmarks/loadgen.py", "--url", url, *args],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed:\n{done.stderr[-3000:]}")
    report: dict[str, object] = json.loads(done.stdout)
    return report


def arrival_latency(
    accepted_at: dict[str, list[float]], arrived_at: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Per notification, p50/p99 in ms of POST sent -> SMTP arrival (`e2e_ms`) and of 202 read
    -> SMTP arrival (`accept_to_arrival_ms`). The latter can be negative: the email may land
    before the load generator, busy with its other POSTs, gets round to reading the 202."""
    pairs = [(arrived_at[i], t) for i, t in accepted_at.items() if i in arrived_at]

    def summary(waits: list[float]) -> dict[str, float]:
        if not waits:
            return {"p50": float("nan"), "p99": float("nan")}
        return {q: round(percentile(waits, int(q[1:])) * 1000, 1) for q in ("p50", "p99")}

    return {
        "e2e_ms": summary([arrived - sent for arrived, (sent, _) in pairs]),
        "accept_to_arrival_ms": summary([arrived - read for arrived, (_, read) in pairs]),
    }


def first_arrivals(messages: list[Received], header: str) -> dict[str, float]:
    """{id in `header`: first arrival}; a duplicate delivery is not the notification arriving."""
    first: dict[str, float] = {}
    for m in messages:
        first.setdefault(str(m.message[header]), m.arrived)
    return first


def measure(
    kind: str, workers: int, count: int, concurrency: int, *, latency: bool = False
) -> dict[str, object]:
    """With `latency`, also per-notification arrival latencies (see arrival_latency)."""
    env = {"HERALD_RATE_LIMIT_PER_SECOND": "0"}
    with deployment(kind, workers=workers, env=env) as herald, tempfile.TemporaryDirectory() as tmp:
        # Warm up: connections, topic metadata, the SMTP pool; not counted.
        assert loadgen(herald.api_url, "--count", "50")["accepted"] == 50
        wait_for(50, herald.sink, 120)
        before = len(herald.sink.messages())
        accepted_file = Path(tmp) / "accepted.json"
        extra = ["--accepted-out", str(accepted_file)] if latency else []
        report = loadgen(
            herald.api_url, "--count", str(count), "--concurrency", str(concurrency), *extra
        )
        accepted = report["accepted"]
        assert isinstance(accepted, int)
        wait_for(before + accepted, herald.sink, 600)
        arrived = herald.sink.messages()[before:]
        accepted_at = json.loads(accepted_file.read_text()) if latency else {}
    last_arrival = max(m.arrived for m in arrived)
    elapsed = last_arrival - report["started"]
    extra_fields: dict[str, object] = {}
    if latency:
        first = first_arrivals(arrived, "X-Herald-Notification-Id")
        extra_fields |= arrival_latency(accepted_at, first)
    return {
        "deployment": kind,
        "workers": workers,
        "notifications": report["accepted"],
        "seconds": round(elapsed, 2),
        "per_second": round(report["accepted"] / elapsed, 1),
        "accept_per_second": round(
            report["accepted"] / (report["finished"] - report["started"]), 1
        ),
        "post_ms": report["post_ms"],
        "failures": report["failures"],
        **extra_fields,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--embedded", action="store_true", help="also measure herald serve")
    args = parser.parse_args()
    os.chdir(RESULTS.parent.parent)
    runs = [measure("distributed", w, args.count, args.concurrency) for w in args.workers]
    if args.embedded:
        runs.insert(0, measure("embedded", 1, args.count, args.concurrency))
    print(f"POST -> SMTP arrival, {args.count} notifications, {args.concurrency} concurrent POSTs")
    header = ("deployment", "workers", "notif/s", "accept/s", "POST p50", "POST p99")
    print(f"{header[0]:<12} " + " ".join(f"{h:>9}" for h in header[1:]))
    for r in runs:
        post = r["post_ms"]
        assert isinstance(post, dict)
        print(
            f"{r['deployment']:<12} {r['workers']:>9} {r['per_second']:>9} "
            f"{r['accept_per_second']:>9} {post['p50']:>7}ms {post['p99']:>7}ms"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "throughput",
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (RESULTS / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print("written to benchmarks/results/throughput.json")


if __name__ == "__main__":
    main()
