"""Batch ingest measured with wrk: notifications stored per second, and the API's CPU per item.

    .venv/bin/python benchmarks/batch_ingest.py [--seconds 10] [--batch 1000]
                                                [--connections 4] [--before REV] [--rounds 2]
                                                [--deployment embedded|distributed]

`herald serve` (embedded, the consumers in their own process) or the distributed deployment
(`herald api`, relay and a worker on PostgreSQL and Kafka), delivering to Postfix's
smtp-sink, takes `POST /api/v1/notifications/batch` requests of `batch` items from `wrk`
(benchmarks/wrk_batch.lua), `connections` at a time, for `seconds`. Reported: items stored
per second (202 requests times batch), request p50/p99, and the CPU (user+sys, from /proc) of
the API's process, of the consumers' (the relay's and the worker's, distributed), of
PostgreSQL's processes and of the broker (Tansu), per stored item (the machine's whole
PostgreSQL: run nothing else meanwhile). `--before REV` alternates with the
code of git revision REV (a temporary worktree, same virtualenv), `rounds` times each: the
VM's speed drifts, so only runs side by side compare.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from harness import ROOT, deployment  # first: puts the repo root on sys.path
from hotpath import worktree
from native_tools import CSink, ProcessTree, missing_tools, service_cpu

WRK_SCRIPT = ROOT / "benchmarks" / "wrk_batch.lua"
COLUMNS = {  # printed heading: key of a run's figures
    "stored/s": "stored_per_second",
    "p50 ms": "request_p50_ms",
    "p99 ms": "request_p99_ms",
    "API us/item": "api_us_per_item",
    "consumers": "consumers_us_per_item",
    "postgres": "postgres_us_per_item",
    "broker": "broker_us_per_item",
}


def post_batches(url: str, seconds: float, connections: int, batch: int) -> dict[str, float]:
    done = subprocess.run(
        [
            *("wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", "--timeout", "60s"),
            *("-s", str(WRK_SCRIPT), url, "--", str(batch)),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    report: dict[str, float] = json.loads(next(x for x in done.stdout.splitlines() if "{" in x))
    return report


def measure(args: argparse.Namespace, source: Path | None) -> dict[str, Any]:
    env = {"HERALD_RATE_LIMIT_PER_SECOND": "0", "HERALD_SERVE_CONSUMER_PROCESS": "on"}
    if source is not None:
        env["PYTHONPATH"] = str(source / "src")
    sink = CSink().start()
    try:
        with deployment(args.deployment, env=env, sink=sink) as d:
            api = d.processes[0].proc
            assert api is not None
            post_batches(d.api_url, 2, 2, args.batch)  # warm-up
            d.analyze()  # the steady state: see harness.Deployment.analyze
            time.sleep(1)
            others = [p.proc.pid for p in d.processes[1:] if p.proc is not None]
            whole = ProcessTree([api.pid, *others])
            consumers = [pid for pid in whole.pids() if pid != api.pid]
            trees = {"api": _Own([api.pid]), "consumers": ProcessTree(consumers)}

            def spent() -> dict[str, float]:
                return {name: tree.cpu_seconds() for name, tree in trees.items()} | service_cpu()

            before = spent()
            report = post_batches(d.api_url, args.seconds, args.connections, args.batch)
            stored = int(report["accepted"]) * args.batch
            cpu = {name: seconds - before[name] for name, seconds in spent().items()}
    finally:
        sink.stop()
    return {
        "stored_per_second": round(stored / report["seconds"], 1),
        "request_p50_ms": report["p50_ms"],
        "request_p99_ms": report["p99_ms"],
        "api_us_per_item": round(cpu["api"] * 1e6 / stored, 1),
        "consumers_us_per_item": round(cpu["consumers"] * 1e6 / stored, 1),
        "postgres_us_per_item": round(cpu["postgres"] * 1e6 / stored, 1),
        "broker_us_per_item": round(cpu["tansu"] * 1e6 / stored, 1),
    }


class _Own(ProcessTree):
    """One process's CPU, without its children's (the API's, not the consumers')."""

    def pids(self) -> list[int]:
        return list(self.roots)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--before", help="git revision to alternate with")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--deployment", choices=["embedded", "distributed"], default="embedded")
    args = parser.parse_args()
    if missing := missing_tools():
        raise SystemExit(f"missing: {', '.join(missing)} (apt-get install wrk postfix)")
    with ExitStack() as stack:
        before = worktree(args.before, stack) if args.before else None
        runs: list[tuple[str, dict[str, Any]]] = []
        for _ in range(args.rounds if before else 1):
            if before is not None:
                runs.append((f"@{args.before}", measure(args, before)))
            runs.append(("this checkout", measure(args, None)))
    print(f"{'code':<16}" + "".join(f"{heading:>13}" for heading in COLUMNS))
    for name, run in runs:
        print(f"{name:<16}" + "".join(f"{run[key]:>13}" for key in COLUMNS.values()))
    out = {
        "benchmark": "batch_ingest",
        "batch": args.batch,
        "deployment": args.deployment,
        "runs": [dict(r, code=n) for n, r in runs],
    }
    name = "batch_ingest" if args.deployment == "embedded" else "batch_ingest_distributed"
    (ROOT / "benchmarks" / "results" / f"{name}.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
