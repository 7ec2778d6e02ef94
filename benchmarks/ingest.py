"""Ingest: notifications accepted per second, one per request and in batches.

    .venv/bin/python benchmarks/ingest.py [--count 2000] [--batch 100] [--kinds embedded ...]

For each deployment (embedded: `herald serve`; distributed: api, relay and a worker on Kafka,
PostgreSQL and Redis), benchmarks/loadgen.py in a process of its own POSTs `count`
notifications one per request (32 concurrent) and then `5 * count` in batch requests of
`batch` items (4 concurrent). Delivery runs alongside, as it would. Reports accepted
notifications per second and the p50/p99 of the requests; writes benchmarks/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import platform
from typing import Any

from harness import RESULTS, deployment  # first: puts the repo root on sys.path
from throughput import loadgen

SINGLE_CONCURRENCY, BATCH_CONCURRENCY = 32, 4


def measure(kind: str, count: int, batch: int) -> list[dict[str, Any]]:
    runs = []
    # One client posting as fast as it can: the per-caller rate limit would measure itself.
    with deployment(kind, env={"HERALD_RATE_LIMIT_PER_SECOND": "0"}) as d:
        loadgen(d.api_url, "--count", "50", "--concurrency", "8")  # warm-up
        d.analyze()  # the steady state: see harness.Deployment.analyze
        batched = ["--count", str(count * 5), "--batch", str(batch)]
        for mode, args in (
            ("single", ["--count", str(count), "--concurrency", str(SINGLE_CONCURRENCY)]),
            (f"batch of {batch}", [*batched, "--concurrency", str(BATCH_CONCURRENCY)]),
        ):
            report = loadgen(d.api_url, *args)
            seconds = float(report["finished"]) - float(report["started"])  # type: ignore[arg-type]
            accepted = int(report["accepted"])  # type: ignore[call-overload]
            runs.append(
                {
                    "deployment": kind,
                    "mode": mode,
                    "notifications": accepted,
                    "seconds": round(seconds, 2),
                    "accepted_per_second": round(accepted / seconds, 1),
                    "request_ms": report["post_ms"],
                    "failures": report["failures"],
                }
            )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--kinds", nargs="+", default=["embedded", "distributed"])
    args = parser.parse_args()
    runs = [run for kind in args.kinds for run in measure(kind, args.count, args.batch)]
    print(f"{'deployment':<13}{'mode':<14}{'accepted/s':>11}{'request p50':>14}{'p99':>11}")
    for run in runs:
        ms = run["request_ms"]
        print(
            f"{run['deployment']:<13}{run['mode']:<14}{run['accepted_per_second']:>11}"
            f"{ms['p50']:>11.0f} ms{ms['p99']:>8.0f} ms"
        )
    out = {"benchmark": "ingest", "machine": platform.node(), "runs": runs}
    (RESULTS / "ingest.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
