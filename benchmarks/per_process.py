"""Where a notification's CPU goes: each process's CPU per delivered notification, under `wrk`.

    .venv/bin/python benchmarks/per_process.py [--deployment distributed|embedded]
                                               [--seconds 10] [--connections 32]
                                               [--before REV] [--rounds 3]

The deployment (harness.deployment, delivering to Postfix's smtp-sink) takes single POSTs from
`wrk` (as native.py does) for `seconds` after a warm-up and `Deployment.analyze`; reported per
delivered notification: the CPU (user+sys, from /proc) of each Herald process (with its
children), of PostgreSQL's processes, Tansu and Redis (the machine's whole PostgreSQL and Redis:
run nothing else meanwhile), their total, and the rates. Needs `apt-get install wrk postfix`.
`--before REV` alternates with the code of revision REV (a temporary worktree), `rounds` times
each: the VM's speed drifts by a third within minutes, so compare runs side by side, and the
shares of the total (printed too) rather than the milliseconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

from harness import deployment  # first: puts the repo root on sys.path
from hotpath import worktree
from native_tools import CSink, ProcessTree, drive, missing_tools, service_cpu


def measure(args: argparse.Namespace, source: Path | None) -> dict[str, float]:
    env = {"HERALD_RATE_LIMIT_PER_SECOND": "0"}
    if source is not None:
        env["PYTHONPATH"] = str(source / "src")
    sink = CSink().start()
    try:
        with deployment(args.deployment, env=env, sink=sink) as d:
            warm = drive(d.api_url, 2, 8, tag=f"warm-{uuid.uuid4().hex[:6]}")
            sink.wait_for(int(warm["accepted"]), 600)
            d.analyze()
            herald = {p.name: ProcessTree([p.proc.pid]) for p in d.processes if p.proc}

            def cpu() -> dict[str, float]:
                own = service_cpu()
                return {name: tree.cpu_seconds() for name, tree in herald.items()} | own

            before, delivered_before = cpu(), sink.count()
            started = time.monotonic()
            posts = drive(d.api_url, args.seconds, args.connections, tag=uuid.uuid4().hex[:8])
            accepted = int(posts["accepted"])
            finished = sink.wait_for(delivered_before + accepted, 300)
            spent = {name: seconds - before[name] for name, seconds in cpu().items()}
    finally:
        sink.stop()
    figures = {f"{name} ms": round(s * 1000 / accepted, 3) for name, s in spent.items()}
    figures["total ms"] = round(sum(spent.values()) * 1000 / accepted, 3)
    figures["delivered/s"] = round(accepted / (finished - started), 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployment", choices=["distributed", "embedded"], default="distributed")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--before", help="git revision to alternate with")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    os.environ.pop("PYTHONPATH", None)
    if missing := missing_tools():
        sys.exit(f"missing {', '.join(missing)}: apt-get install wrk postfix")
    with ExitStack() as stack:
        sources: list[tuple[str, Path | None]] = [("this checkout", None)]
        if args.before:
            sources.insert(0, (args.before, worktree(args.before, stack)))
        for _ in range(args.rounds):
            for name, source in sources:
                figures = measure(args, source)
                total = figures["total ms"]
                shares = {
                    key.removesuffix(" ms"): f"{value / total:.3f}"
                    for key, value in figures.items()
                    if key.endswith(" ms") and key != "total ms"
                }
                print(name, figures, "shares", shares, flush=True)


if __name__ == "__main__":
    main()
