"""POST -> email arrival latency under a steady load, at a share of the peak rate (embedded).

    .venv/bin/python benchmarks/latency_under_load.py [--share 0.5] [--seconds 20]
                                                      [--connections 32] [--kind embedded]
                                                      [--env HERALD_X=value ...]

Needs `apt-get install wrk postfix`. One `herald serve` (or the distributed deployment) and one
Postfix `smtp-sink` that writes each message to a file (in /dev/shm when there is one). First
the peak: `wrk` posts as fast as 32 connections can for 10 s, and the peak is the accepted
notifications over the time until the sink has them all. Then a paced load at `share` of that
peak: each connection pauses between its requests (wrk's `delay()`; 3 s of trial find the pause
that gives the rate), and each message carries the time it was posted (`sent_us=`, taken by
wrk's Lua through clock_gettime); a message's latency is its file's modification time minus
that. Both clocks are CLOCK_REALTIME on this machine. Prints the distribution and writes
benchmarks/results/latency_under_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from harness import RESULTS, deployment
from native_tools import CSink, drive, missing_tools

_SENT = re.compile(rb"sent_us=(\d+)")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def latencies_ms(dump: Path) -> list[float]:
    """Each dumped message's arrival (its file's mtime) minus the time it was posted."""
    found = []
    for path in dump.rglob("*"):
        if path.is_file():
            sent = _SENT.search(path.read_bytes())
            if sent is not None:
                found.append((path.stat().st_mtime_ns / 1000 - int(sent.group(1))) / 1000)
    return found


def calibrated_gap(url: str, connections: int, target: float, sink: CSink) -> int:
    """The pause per connection that gives ``target`` requests/s: a connection sends one per
    pause + response time, so 3 s at a first guess tell the response time, then adjust."""
    guess = connections * 1000 / target
    before = sink.count()
    trial = drive(url, 3, connections, tag=f"calibrate-{uuid.uuid4().hex[:6]}", gap_ms=round(guess))
    sink.wait_for(before + int(trial["accepted"]), 600)
    response_ms = max(0.0, connections * 1000 / (trial["accepted"] / trial["seconds"]) - guess)
    return max(1, round(guess - response_ms))


def clear(dump: Path) -> None:
    for entry in dump.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--share", type=float, default=0.5, help="of the peak rate")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--kind", choices=["embedded", "distributed"], default="embedded")
    parser.add_argument("--env", nargs="*", default=[], help="HERALD_X=value settings to add")
    args = parser.parse_args()
    if missing := missing_tools():
        raise SystemExit(f"missing: {', '.join(missing)} (apt-get install wrk postfix)")

    # In memory where there is a tmpfs: on a disk, the sink's writing a file per message cost
    # it (and the two cores) enough to double the p99 it measured (153 -> 325 ms at ~750/s).
    shm = Path("/dev/shm")
    dump = Path(tempfile.mkdtemp(prefix="herald-sink-", dir=shm if shm.is_dir() else None))
    os.chmod(dump, 0o777)  # smtp-sink runs as nobody when started as root
    sink = CSink(dump=dump).start()
    try:
        env = {"HERALD_RATE_LIMIT_PER_SECOND": "0", **dict(e.split("=", 1) for e in args.env)}
        with deployment(args.kind, env=env, sink=sink) as d:
            warm = drive(d.api_url, 2, 8, tag=f"warm-{uuid.uuid4().hex[:6]}")
            sink.wait_for(int(warm["accepted"]), 600)
            d.analyze()  # the steady state: see harness.Deployment.analyze
            before = sink.count()
            started = time.monotonic()
            flat_out = drive(d.api_url, 10, args.connections, tag=f"peak-{uuid.uuid4().hex[:6]}")
            finished = sink.wait_for(before + int(flat_out["accepted"]), 600)
            peak = flat_out["accepted"] / (finished - started)
            time.sleep(1)
            clear(dump)

            target = args.share * peak
            gap_ms = calibrated_gap(d.api_url, args.connections, target, sink)
            clear(dump)
            before = sink.count()
            paced = drive(
                d.api_url,
                args.seconds,
                args.connections,
                tag=f"paced-{uuid.uuid4().hex[:6]}",
                gap_ms=gap_ms,
            )
            sink.wait_for(before + int(paced["accepted"]), 600)
            time.sleep(0.5)  # the last files' writes
            found = latencies_ms(dump)
    finally:
        sink.stop()
        shutil.rmtree(dump, ignore_errors=True)

    result: dict[str, Any] = {
        "kind": args.kind,
        "env": args.env,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "peak_per_second": round(peak, 1),
        "share": args.share,
        "paced_per_second": round(paced["accepted"] / paced["seconds"], 1),
        "gap_ms_per_connection": gap_ms,
        "connections": args.connections,
        "accepted": int(paced["accepted"]),
        "measured": len(found),
        "post_p50_ms": paced["p50_ms"],
        "post_p99_ms": paced["p99_ms"],
        "arrival_p50_ms": round(percentile(found, 50), 1),
        "arrival_p90_ms": round(percentile(found, 90), 1),
        "arrival_p99_ms": round(percentile(found, 99), 1),
        "arrival_max_ms": round(max(found), 1),
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latency_under_load.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
