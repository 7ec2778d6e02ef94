"""Herald against the FastAPI + Celery baseline, measured with C tools: `wrk` posts, Postfix's
`smtp-sink` receives. Neither is Python, so the two cores go to the system under test.

    .venv/bin/python benchmarks/native.py [--seconds 10] [--connections 32] [--only NAME ...]
                                          [--before REV] [--env HERALD_X=value ...]

Needs `apt-get install wrk postfix` (smtp-sink and smtp-source come with postfix). For each
configuration, in one run: a fresh smtp-sink, the system, 2 s of warm-up POSTs (all delivered
before the measure starts), then POSTs for `seconds` over `connections` keep-alive connections,
each with its own body and Idempotency-Key; the rate is accepted notifications / (first POST →
the sink counting the last of them). CPU is user+sys of
the system's own processes (and their children) over that span, per delivered notification;
brokers and databases outside them (Redis for Celery, Tansu and PostgreSQL for Herald
distributed) are not counted. Peak RSS is the sum of the processes' VmHWM. The first row is the
sink's own ceiling (smtp-source, C, 8 sessions). The baseline runs first and again last, and
each ratio is to the faster of its two runs: the VM's speed drifts by a third within minutes,
and a baseline measured in a slow moment would flatter Herald. Writes
benchmarks/results/native.json.
--before REV also measures each Herald configuration on the code of git revision REV (a
temporary worktree, same virtualenv), before and after this checkout's, in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

from baseline_celery import baseline
from harness import RESULTS, deployment
from hotpath import worktree
from native_tools import CSink, ProcessTree, drive, missing_tools, sink_limit

# A system under test, given a sink: its API URL and the pids of its processes.
# A system started: its URL, its processes, and what to do after the warm-up.
Started = tuple[str, list[int], Callable[[], None]]
System = Callable[[CSink], AbstractContextManager[Started]]


@contextmanager
def celery(sink: CSink) -> Iterator[Started]:
    with baseline(sink=sink) as app:
        yield app.api_url, [p.pid for p in app.processes], lambda: None


# HERALD_X=value settings for every Herald configuration (--env).
SETTINGS: dict[str, str] = {}


def herald(kind: str, workers: int = 1, source: Path | None = None) -> System:
    """``source``: a checkout whose code to run instead of this one's."""

    @contextmanager
    def start(sink: CSink) -> Iterator[Started]:
        # One client posting as fast as it can: the per-caller limit would measure itself.
        env = {"HERALD_RATE_LIMIT_PER_SECOND": "0", **SETTINGS}
        if source is not None:
            env["PYTHONPATH"] = str(source / "src")
        with deployment(kind, workers=workers, env=env, sink=sink) as d:
            yield d.api_url, [p.proc.pid for p in d.processes if p.proc is not None], d.analyze

    return start


HERALD: dict[str, tuple[str, int]] = {
    "herald embedded": ("embedded", 1),
    "herald distributed, 1 worker": ("distributed", 1),
}
BASELINE = "celery baseline"
SYSTEMS: dict[str, System] = {
    BASELINE: celery,
    **{name: herald(kind, workers) for name, (kind, workers) in HERALD.items()},
}


def measure(system: System, seconds: float, connections: int) -> dict[str, Any]:
    sink = CSink().start()
    try:
        with system(sink) as (url, pids, warmed_up):
            tree = ProcessTree(pids)
            warm = drive(url, 2, 8, tag=f"warm-{uuid.uuid4().hex[:6]}")
            sink.wait_for(int(warm["accepted"]), 600)
            warmed_up()  # the steady state: see harness.Deployment.analyze
            before, cpu_before = sink.count(), tree.cpu_seconds()
            started = time.monotonic()
            posts = drive(url, seconds, connections, tag=uuid.uuid4().hex[:8])
            accepted = int(posts["accepted"])
            finished = sink.wait_for(before + accepted, 900)
            cpu = tree.cpu_seconds() - cpu_before
            seconds = finished - started
            return {
                "accepted": accepted,
                "refused": int(posts["requests"]) - accepted,
                "of_which_429": int(posts["limited"]),
                "of_which_5xx": int(posts["failed"]),
                "per_second": round(accepted / seconds, 1),
                "accepted_per_second": round(accepted / posts["seconds"], 1),
                "post_p50_ms": posts["p50_ms"],
                "post_p99_ms": posts["p99_ms"],
                "cpu_ms_per_notification": round(cpu * 1000 / accepted, 2),
                "peak_rss_mb": tree.peak_rss_mb(),
                "seconds": round(seconds, 2),
            }
    finally:
        sink.stop()


def table(limit: float, runs: dict[str, dict[str, Any]]) -> str:
    baselines = [
        r["per_second"]
        for name, r in runs.items()
        if name.startswith(BASELINE) and "per_second" in r
    ]
    baseline_rate = max(baselines, default=None)  # the faster run of the two
    header = ["configuration", "notif/s", "vs celery", "CPU ms/notif", "accept/s"]
    header += ["POST p50", "POST p99", "peak RSS"]
    rows = [header, ["limit: smtp-sink (smtp-source, 8 sessions)", f"{limit:.0f}"]]
    for name, r in runs.items():
        if "error" in r:
            rows.append([name, "failed: " + r["error"][:60]])
            continue
        ratio = f"{r['per_second'] / baseline_rate:.2f}x" if baseline_rate else "-"
        rows.append(
            [
                name,
                str(r["per_second"]),
                ratio,
                str(r["cpu_ms_per_notification"]),
                str(r["accepted_per_second"]),
                f"{r['post_p50_ms']} ms",
                f"{r['post_p99_ms']} ms",
                f"{r['peak_rss_mb']} MiB",
            ]
        )
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", nargs="*", choices=list(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--before", help="git revision to compare with, in the same run")
    parser.add_argument("--env", nargs="*", default=[], help="HERALD_X=value settings to add")
    args = parser.parse_args()
    SETTINGS.update(e.split("=", 1) for e in args.env)
    os.environ.pop("PYTHONPATH", None)
    if missing := missing_tools():
        sys.exit(f"missing {', '.join(missing)}: apt-get install wrk postfix")

    sink = CSink().start()
    try:
        limit = sink_limit(sink)
    finally:
        sink.stop()
    plan: list[tuple[str, System]] = []
    with ExitStack() as stack:
        before = worktree(args.before, stack) if args.before else None
        for name in args.only:
            if before is None or name not in HERALD:
                plan.append((name, SYSTEMS[name]))
                continue
            # Before, after, before again: drift on a shared machine shows.
            was = herald(*HERALD[name], source=before)
            plan += [(f"{name} @{args.before}", was), (name, SYSTEMS[name])]
            plan.append((f"{name} @{args.before} (again)", was))
        if BASELINE in args.only and len(plan) > 1:
            plan.append((f"{BASELINE} (again)", celery))  # see the module docstring
        runs: dict[str, dict[str, Any]] = {}
        for name, system in plan:
            print(f"-- {name}", file=sys.stderr, flush=True)
            try:
                runs[name] = measure(system, args.seconds, args.connections)
            except Exception as exc:  # one failed configuration still leaves the others'
                runs[name] = {"error": repr(exc)}
            print(json.dumps(runs[name]), file=sys.stderr, flush=True)
    print(table(limit, runs))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "native.json").write_text(
        json.dumps(
            {
                "when": time.strftime("%Y-%m-%d"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "seconds": args.seconds,
                "connections": args.connections,
                "before": args.before,
                "env": args.env,
                "sink_limit_per_second": round(limit, 1),
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
