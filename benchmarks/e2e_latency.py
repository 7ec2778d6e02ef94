"""Time from POST /api/v1/notifications to the email's arrival at a local SMTP server.

Runs `herald serve` with the embedded defaults (SQLite, embedded bus) as a separate process,
sends notifications one at a time and records, for each, the time from just before the POST
to the moment the SMTP server received the message. Prints the distribution and writes
benchmarks/results/e2e_latency.json.

    .venv/bin/python benchmarks/e2e_latency.py [--count 100] [--sqlite-synchronous FULL]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.herald_process import HeraldProcess  # noqa: E402
from tests.smtp_sink import SmtpSink  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def wait_for_arrival(sink: SmtpSink, notification_id: str, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for mail in reversed(sink.messages()):
            if mail.notification_id == notification_id:
                return mail.arrived
        time.sleep(0.0005)
    raise TimeoutError(f"{notification_id} never arrived")


def run(count: int, warmup: int, synchronous: str) -> dict[str, object]:
    sink = SmtpSink()
    sink.start()
    with tempfile.TemporaryDirectory() as workdir:
        herald = HeraldProcess(
            Path(workdir),
            {
                "HERALD_SMTP_URL": sink.url,
                "HERALD_SQLITE_SYNCHRONOUS": synchronous,
                "HERALD_LOG_LEVEL": "WARNING",
            },
        ).start()
        latencies: list[float] = []
        try:
            with httpx.Client(base_url=herald.url) as http:
                for i in range(warmup + count):
                    started = time.time()
                    response = http.post(
                        "/api/v1/notifications",
                        json={
                            "recipient": f"user{i}@example.com",
                            "subject": f"Benchmark {i}",
                            "message": "Latency probe",
                        },
                    )
                    response.raise_for_status()
                    arrived = wait_for_arrival(sink, response.json()["id"])
                    if i >= warmup:
                        latencies.append((arrived - started) * 1000)
        finally:
            herald.stop()
            sink.stop()
    return {
        "benchmark": "e2e_latency",
        "deployment": "embedded (SQLite + embedded bus), herald serve",
        "sqlite_synchronous": synchronous,
        "count": count,
        "latency_ms": {
            "median": round(statistics.median(latencies), 2),
            "p90": round(percentile(latencies, 90), 2),
            "p99": round(percentile(latencies, 99), 2),
            "min": round(min(latencies), 2),
            "max": round(max(latencies), 2),
        },
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--sqlite-synchronous", default="FULL", choices=["NORMAL", "FULL"])
    args = parser.parse_args()
    result = run(args.count, args.warmup, args.sqlite_synchronous)
    latency = result["latency_ms"]
    assert isinstance(latency, dict)
    print(f"POST -> email arrival, {args.count} sequential notifications, {result['deployment']}")
    print(f"sqlite synchronous={args.sqlite_synchronous}")
    for name, value in latency.items():
        print(f"  {name:>6}: {value:8.2f} ms")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"e2e_latency_{args.sqlite_synchronous.lower()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
