"""The embedded hot path, profiled and timed: `herald serve` (SQLite, embedded bus) under load.

    .venv/bin/python benchmarks/hotpath.py [--count 1000] [--profile] [--before REV]

Starts `herald serve` with email to a local SMTP sink, sends `count` notifications with
benchmarks/loadgen.py (a process of its own, after a warm-up) and times POST → arrival of the
last email. --profile runs the server under pyinstrument and prints where its time went.
--before REV also runs the same load against the code of git revision REV (a temporary
worktree, same virtualenv), then this checkout again, and prints both side by side: a
before/after ratio measured in one run. Writes benchmarks/results/hotpath.json.
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
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from harness import RESULTS, ROOT  # first: puts the repo root on sys.path
from throughput import loadgen, wait_for

# isort: split
from tests.herald_process import HeraldProcess
from tests.smtp_sink import SmtpSink

WARM_UP = 50


def run_once(source: Path, count: int, concurrency: int, profile: Path | None) -> dict[str, Any]:
    """One embedded server running the code under ``source``; figures for ``count`` emails."""
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        sink = SmtpSink()
        sink.start()
        stack.callback(sink.stop)
        env = {"HERALD_SMTP_URL": sink.url, "PYTHONPATH": str(source / "src")}
        server = HeraldProcess(workdir, env)
        if profile is not None:
            server.start = _profiled(server, profile)  # type: ignore[method-assign]
        server.start()
        stack.callback(server.stop)
        loadgen(server.url, "--count", str(WARM_UP), "--concurrency", "8")
        wait_for(WARM_UP, sink, timeout=60)
        assert server.proc is not None
        cpu_before = cpu_seconds(server.proc.pid)
        started = time.time()
        report = loadgen(server.url, "--count", str(count), "--concurrency", str(concurrency))
        wait_for(WARM_UP + count, sink, timeout=600)
        arrived = max(m.arrived for m in sink.messages())
        seconds = arrived - started
        cpu = cpu_seconds(server.proc.pid) - cpu_before
        server.proc.send_signal(signal.SIGINT)  # pyinstrument writes its report on exit
        server.proc.wait(60)
    return {
        "source": str(source),
        "notifications": count,
        "seconds": round(seconds, 2),
        "per_second": round(count / seconds, 1),
        # The server's own CPU per notification: steadier than rates on a shared machine.
        "cpu_ms_per_notification": round(cpu / count * 1000, 2),
        "accept_per_second": round(count / (report["finished"] - report["started"]), 1),  # type: ignore[operator]
        "post_ms": report["post_ms"],
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _profiled(server: HeraldProcess, out: Path) -> Any:
    def start(*, wait: bool = True) -> HeraldProcess:
        args = [
            sys.executable, "-m", "pyinstrument", "-r", "text",
            "-o", str(out), "-m", "herald", "serve",
            "--host", "127.0.0.1", "--port", str(server.port),
        ]  # fmt: skip
        with server.log_path.open("ab") as log:
            server.proc = subprocess.Popen(
                args, cwd=server.workdir, env=server.env, stdout=log, stderr=subprocess.STDOUT
            )
        if wait:
            server.wait_healthy()
        return server

    return start


def worktree(rev: str, stack: ExitStack) -> Path:
    path = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "before"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT, check=True)
    stack.callback(
        subprocess.run, ["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--before", help="git revision to compare with, in the same run")
    args = parser.parse_args()
    os.environ.pop("PYTHONPATH", None)
    with ExitStack() as stack:
        runs = []
        if args.before:
            before = worktree(args.before, stack)
            runs.append(("before", run_once(before, args.count, args.concurrency, None)))
        profile = RESULTS / "hotpath-profile.txt" if args.profile else None
        runs.append(
            (
                "after" if args.before else "now",
                run_once(ROOT, args.count, args.concurrency, profile),
            )
        )
        if args.before:  # again, so drift on a shared machine shows
            before_again = run_once(before, args.count, args.concurrency, None)
            runs.append(("before (again)", before_again))
    print(
        f"{'run':<16}{'notifications/s':>17}{'CPU ms/notification':>21}"
        f"{'accepted/s':>12}{'POST p50 ms':>13}{'p99':>9}"
    )
    for name, run in runs:
        post = run["post_ms"]
        print(
            f"{name:<16}{run['per_second']:>17}{run['cpu_ms_per_notification']:>21}"
            f"{run['accept_per_second']:>12}{post['p50']:>13}{post['p99']:>9}"
        )
    result: dict[str, Any] = {"benchmark": "hotpath", "before": args.before, "runs": dict(runs)}
    if args.before:
        before_runs, after = (runs[0][1], runs[2][1]), runs[1][1]
        rate = sum(r["per_second"] for r in before_runs) / 2
        cpu = sum(r["cpu_ms_per_notification"] for r in before_runs) / 2
        result["speedup"] = round(after["per_second"] / rate, 2)
        result["cpu_ratio"] = round(cpu / after["cpu_ms_per_notification"], 2)
        print(
            f"after vs mean of the before runs: {result['speedup']}x the rate, "
            f"{result['cpu_ratio']}x less CPU per notification"
        )
    if profile is not None:
        print(f"profile: {profile}")
    (RESULTS / "hotpath.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
