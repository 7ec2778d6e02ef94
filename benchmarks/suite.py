"""The whole benchmark suite in one run: limits, the Celery baseline and Herald, one table.

    .venv/bin/python benchmarks/suite.py [--count 1000] [--concurrency 32] [--quick]

In order: the physical limits (benchmarks/limits.py), the FastAPI + Celery baseline
(benchmarks/baseline_celery.py), then Herald embedded (1 worker) and distributed (1 and 2
workers) through throughput.measure(). Every configuration gets the same load: loadgen.py in a
process of its own, `count` POSTs at `concurrency`, after 50 warm-up POSTs. Ingest is measured
in the same runs (accepted/s, POST p50/p99), so it is ingest while delivery runs alongside.
Prints one table, writes benchmarks/results/suite.json and benchmarks/results/suite.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import traceback
from collections.abc import Callable
from typing import Any

from baseline_celery import measure_baseline
from charts import draw
from harness import RESULTS, ROOT
from limits import measure_limits
from throughput import measure

Run = dict[str, Any]


def configurations(count: int, concurrency: int) -> list[tuple[str, Callable[[], Run]]]:
    def herald(kind: str, workers: int) -> Callable[[], Run]:
        return lambda: measure(kind, workers, count, concurrency, latency=True)

    return [
        ("celery baseline", lambda: measure_baseline(count, concurrency)),
        ("herald embedded", herald("embedded", 1)),
        ("herald distributed, 1 worker", herald("distributed", 1)),
        ("herald distributed, 2 workers", herald("distributed", 2)),
    ]


def ratios(run: Run, baseline: Run | None, limits: dict[str, Run]) -> dict[str, float | None]:
    def share(a: object, b: object) -> float | None:
        if isinstance(a, int | float) and isinstance(b, int | float) and b:
            return float(f"{a / b:.4g}")  # significant digits: Kafka's share is tiny
        return None

    rate = run.get("per_second")
    # Only the distributed deployment goes through Kafka.
    uses_kafka = run["deployment"] == "distributed"
    kafka = limits.get("kafka", {}).get("per_second") if uses_kafka else None
    return {
        "vs_celery": share(rate, (baseline or {}).get("per_second")),
        "of_smtp_limit": share(rate, limits.get("smtp", {}).get("per_second")),
        "of_kafka_produce": share(rate, kafka),
    }


def _cell(value: object, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and unit == "x":
        return f"{value:.2f}x"
    if isinstance(value, float) and unit == "%":
        return f"{value * 100:.3g}%"
    return f"{value}{unit}"


def table(runs: list[Run], limits: dict[str, Run]) -> str:
    header = ["configuration", "notif/s", "accept/s", "POST p50", "POST p99"]
    header += ["e2e p50", "e2e p99", "202>SMTP p50", "202>SMTP p99"]
    header += ["vs celery", "of SMTP", "of Kafka"]
    rows = [header]
    if "smtp" in limits:
        rows.append(["limit: SMTP sink, 1 connection", str(limits["smtp"]["per_second"])])
    if "kafka" in limits:
        kafka = limits["kafka"]
        rows.append(["limit: Kafka produce, pipelined", str(kafka["per_second"])])
        rows.append(["limit: Kafka produce, one by one", str(kafka["sequential_per_second"])])
    for run in runs:
        if "error" in run:
            rows.append([run["configuration"], f"FAILED: {run['error']}"])
            continue
        post, e2e, accept = run["post_ms"], run["e2e_ms"], run["accept_to_arrival_ms"]
        share = run["ratios"]
        rows.append(
            [
                run["configuration"],
                _cell(run["per_second"]),
                _cell(run["accept_per_second"]),
                *(_cell(d[q], "ms") for d in (post, e2e, accept) for q in ("p50", "p99")),
                _cell(share["vs_celery"], "x"),
                _cell(share["of_smtp_limit"], "%"),
                _cell(share["of_kafka_produce"], "%"),
            ]
        )
    # A failed row's message spans the columns: it must not widen the first of them.
    full = [r for r in rows if not r[-1].startswith("FAILED")]
    widths = [max(len(r[i]) for r in full if i < len(r)) for i in range(len(header))]
    lines = []
    for row in rows:
        cells = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=False)]
        if row[-1].startswith("FAILED"):
            cells = row[1:]
        lines.append("  ".join([row[0].ljust(widths[0]), *cells]).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, help="notifications per configuration")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    args = parser.parse_args()
    count = args.count or (200 if args.quick else 1000)
    os.chdir(ROOT)  # loadgen is started as benchmarks/loadgen.py

    limits: dict[str, Run] = {}
    try:
        limits = measure_limits(count, 5000 if args.quick else 20000)
    except Exception as exc:
        traceback.print_exc()
        limits = {"error": {"error": repr(exc)}}

    runs: list[Run] = []
    for name, run in configurations(count, args.concurrency):
        print(f"measuring {name} ...", flush=True)
        # One configuration failing must not lose the others' numbers.
        try:
            runs.append({"configuration": name, **run()})
        except Exception as exc:
            traceback.print_exc()
            runs.append({"configuration": name, "error": repr(exc)[:200]})
    baseline = next((r for r in runs if r.get("deployment") == "celery"), None)
    for run in runs:
        if "error" not in run:
            run["ratios"] = ratios(run, baseline, limits)

    print()
    print(f"{count} notifications per configuration, {args.concurrency} concurrent POSTs")
    print(table(runs, limits))
    print("e2e: POST sent -> SMTP arrival; 202>SMTP: 202 read by the client -> SMTP arrival")
    print(
        "WARNING: the load generator and the SMTP sink are Python, on the same cores: figures "
        "are low, the sink's limit is below the systems' (benchmarks/native.py uses wrk and "
        "smtp-sink)"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "suite",
        "count": count,
        "concurrency": args.concurrency,
        "limits": limits,
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (RESULTS / "suite.json").write_text(json.dumps(result, indent=2) + "\n")
    draw(result, RESULTS / "suite.png")
    print("written to benchmarks/results/suite.json and benchmarks/results/suite.png")
    if any("error" in r for r in runs) or "error" in limits:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
