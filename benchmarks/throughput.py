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
import time

from harness import RESULTS, deployment


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


def measure(kind: str, workers: int, count: int, concurrency: int) -> dict[str, object]:
    with deployment(kind, workers=workers, env={"HERALD_RATE_LIMIT_PER_SECOND": "0"}) as herald:
        # Warm up: connections, topic metadata, the SMTP pool; not counted.
        assert loadgen(herald.api_url, "--count", "50")["accepted"] == 50
        wait_for(50, herald.sink, 120)
        before = len(herald.sink.messages())
        report = loadgen(herald.api_url, "--count", str(count), "--concurrency", str(concurrency))
        accepted = report["accepted"]
        assert isinstance(accepted, int)
        wait_for(before + accepted, herald.sink, 600)
        last_arrival = max(m.arrived for m in herald.sink.messages()[before:])
    elapsed = last_arrival - report["started"]
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
