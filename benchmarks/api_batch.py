"""The API's own CPU per batch item, in one process: no HTTP server, no consumers, no load
generator sharing the cores.

    .venv/bin/python benchmarks/api_batch.py [--batches 200] [--batch 1000] [--concurrency 4]
                                             [--before REV] [--rounds 3] [--instructions]

The app of `herald api` (its middleware, routes and intake) on a PostgreSQL database of its own
takes `batches` requests `POST /api/v1/notifications/batch` of `batch` items (the items of
benchmarks/wrk_batch.lua), `concurrency` at a time, called as an ASGI server calls it. Reported:
the process's CPU (user+sys) per stored item, the wall time per item, and PostgreSQL's CPU per
item (the machine's whole PostgreSQL: run nothing else meanwhile). batch_ingest.py measures the
same API over HTTP beside delivery, where the VM's drift and the cores shared with delivery
blur a change of a tenth; this isolates the API's own cost, so such a change shows. `--before
REV` alternates with the code of git revision REV (a temporary worktree, same virtualenv),
`rounds` times each.

The VM's speed drifts by a fifth within seconds; `--instructions` instead counts the
instructions the process executes per item (valgrind's cachegrind, Debian package `valgrind`:
a run of 25 batches less one of 5), which do not drift: the measure for a change of a few
percent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from harness import ROOT, postgres_database  # first: puts the repo root on sys.path
from hotpath import worktree
from native_tools import service_cpu

PATH = "/api/v1/notifications/batch"
WARM_UP = 10  # batches, not measured
INSTRUCTION_RUNS = (5, 25)  # batches in the short and the long run counted under valgrind
# A run's database, for its process (not in its command line, where pgrep would take it for
# PostgreSQL's).
DATABASE = "API_BATCH_DATABASE_URL"


def batch_body(size: int) -> bytes:
    """The batch benchmarks/wrk_batch.lua sends."""
    items = [
        {
            "recipient": f"user{i}@example.com",
            "subject": "Your code",
            "message": f"Hello, your request {i} is ready.",
        }
        for i in range(1, size + 1)
    ]
    return json.dumps({"items": items}).encode()


async def post(app: Any, body: bytes) -> int:
    """One request as an ASGI server makes it; the response's status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # no disconnect while the app answers
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def measure_here(database_url: str, batches: int, size: int, concurrency: int) -> dict:
    from herald import garbage
    from herald.api.app import create_app
    from herald.config import Settings
    from herald.runtime import Runtime

    settings = Settings(database_url=database_url, rate_limit_per_second=0)  # type: ignore[call-arg]
    runtime = Runtime(settings)
    await runtime.start(migrate=True)
    app = create_app(runtime, open_access=True)
    body = batch_body(size)
    async with app.router.lifespan_context(app):
        garbage.settle()  # as every herald command does
        pacing = asyncio.create_task(garbage.pace())
        queue = iter(range(WARM_UP + batches))
        started: dict[str, float] = {}

        async def client() -> None:
            for n in queue:
                if n == WARM_UP:
                    started.update(cpu=time.process_time(), wall=time.perf_counter())
                    started.update(postgres=service_cpu()["postgres"])
                status = await post(app, body)
                assert status == 202, status

        await asyncio.gather(*(client() for _ in range(concurrency)))
        cpu, wall = time.process_time() - started["cpu"], time.perf_counter() - started["wall"]
        postgres = service_cpu()["postgres"] - started["postgres"]
        pacing.cancel()
    await runtime.close()
    items = batches * size
    return {
        "api_us_per_item": cpu / items * 1e6,
        "wall_us_per_item": wall / items * 1e6,
        "postgres_us_per_item": postgres / items * 1e6,
    }


def measure(source: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    """One run in a process of its own, with the code under ``source`` (None: this checkout)."""
    if not args.instructions:
        return _child(source, args, args.batches)
    # Instructions are counted from the process's start: the difference between a short and a
    # long run is the batches' alone.
    short, long = (_child(source, args, n, counted=True) for n in INSTRUCTION_RUNS)
    items = (INSTRUCTION_RUNS[1] - INSTRUCTION_RUNS[0]) * args.batch
    return {"instructions_per_item": (long["instructions"] - short["instructions"]) / items}


def _child(
    source: Path | None, args: argparse.Namespace, batches: int, *, counted: bool = False
) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str((source or ROOT) / "src"))
    sizes = [f"--batches={batches}", f"--batch={args.batch}", f"--concurrency={args.concurrency}"]
    command = [sys.executable, __file__, "--child", *sizes]
    if counted:
        valgrind = [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
        ]
        command = [*valgrind, *command]
    with postgres_database() as url:
        done = subprocess.run(
            command, env=env | {DATABASE: url}, capture_output=True, text=True, check=True
        )
    figures: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    if counted:
        refs = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
        assert refs is not None, done.stderr[-2000:]
        figures["instructions"] = int(refs.group(1).replace(",", ""))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--before", help="also run git revision REV, alternating")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count the instructions per item under valgrind instead of timing",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run = measure_here(os.environ[DATABASE], args.batches, args.batch, args.concurrency)
        print(json.dumps(asyncio.run(run)))
        return
    if args.instructions:
        if shutil.which("valgrind") is None:
            raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
        columns = {"instructions/item": "instructions_per_item"}
    else:
        columns = {
            "API us/item": "api_us_per_item",
            "wall us/item": "wall_us_per_item",
            "postgres": "postgres_us_per_item",
        }
    print(f"{'code':16}" + "".join(f" {heading:>17}" for heading in columns))
    with ExitStack() as stack:
        runs: list[tuple[str, Path | None]] = [("this checkout", None)]
        if args.before is not None:
            runs.insert(0, (f"@{args.before}", worktree(args.before, stack)))
        for _ in range(args.rounds if args.before else 1):
            for name, source in runs:
                figures = measure(source, args)
                print(f"{name:16}" + "".join(f" {figures[c]:17.1f}" for c in columns.values()))


if __name__ == "__main__":
    main()
