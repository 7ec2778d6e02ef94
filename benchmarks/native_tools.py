"""Load and sink tools that are not written in Python, so they do not eat the cores they measure.

- `CSink`: Postfix's `smtp-sink` (Debian package `postfix`), counting what it receives.
- `drive()`: `wrk` (Debian package `wrk`) posting notifications for a while, each with its own
  body and Idempotency-Key (benchmarks/wrk_notifications.lua).
- `sink_limit()`: Postfix's `smtp-source` against the sink: the sink's own rate.
- `ProcessTree`: CPU seconds (user+sys) and peak RSS of processes and their children, from /proc.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from harness import ROOT

# isort: split
from tests.services import free_port

SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"
WRK_SCRIPT = ROOT / "benchmarks" / "wrk_notifications.lua"
TICKS = os.sysconf("SC_CLK_TCK")


def missing_tools() -> list[str]:
    """The C tools this benchmark needs that are not installed (apt-get install wrk postfix)."""
    tools = {"wrk": shutil.which("wrk"), "smtp-sink": SMTP_SINK, "smtp-source": SMTP_SOURCE}
    return [name for name, path in tools.items() if not path or not os.access(path, os.X_OK)]


class CSink:
    """`smtp-sink -c` on a free loopback port: answers 250 to everything, keeps nothing, and
    prints a running count of delivered messages, which a thread reads."""

    def __init__(self, dump: Path | None = None) -> None:
        """``dump``: a directory where each message is written to a file of its own."""
        self.dump = dump
        self.host = "127.0.0.1"
        self.port = free_port()
        self._count = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> CSink:
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        dump = [] if self.dump is None else ["-d", f"{self.dump}/m."]
        self._proc = subprocess.Popen(
            [SMTP_SINK, "-c", *user, *dump, f"{self.host}:{self.port}", "1024"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        time.sleep(0.2)  # it listens at once; this only lets a failure to bind show
        if self._proc.poll() is not None:
            raise RuntimeError(f"smtp-sink exited with {self._proc.returncode}")
        return self

    def _read(self) -> None:
        # "sess=… quit=… mesg=N\r", over and over.
        assert self._proc is not None
        assert self._proc.stdout is not None
        pending = b""
        while chunk := self._proc.stdout.read1(65536):
            pending += chunk
            *done, pending = pending.split(b"\r")
            if done:
                self._count = int(done[-1].rsplit(b"mesg=", 1)[1])

    def count(self) -> int:
        return self._count

    def wait_for(self, count: int, timeout: float) -> float:
        """Until `count` messages have arrived; the time (monotonic) the last one was seen."""
        deadline = time.monotonic() + timeout
        while self._count < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self._count} of {count} messages arrived")
            time.sleep(0.005)
        return time.monotonic()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(10)


def drive(
    url: str, seconds: float, connections: int, *, tag: str, gap_ms: int | None = None
) -> dict[str, float]:
    """POST notifications for `seconds` over `connections` keep-alive connections (2 wrk
    threads); wrk's report: requests, accepted (202), seconds, latency p50/p99 in ms.
    ``gap_ms``: each connection waits this long after each answer, and each message carries
    its send time (see the Lua script)."""
    threads = min(2, connections)
    done = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{round(seconds)}s",
            "--timeout",
            "30s",
            "-s",
            str(WRK_SCRIPT),
            url,
            "--",
            tag,
            *([] if gap_ms is None else [str(gap_ms)]),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("{"))
    report: dict[str, float] = json.loads(line)
    return report


def sink_limit(sink: CSink, messages: int = 20_000, sessions: int = 8) -> float:
    """Messages per second `smtp-source` (C) delivers to the sink: the sink's own ceiling."""
    before = sink.count()
    started = time.monotonic()
    source = [SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", "512", "-c"]
    subprocess.run(
        [*source, "-f", "bench@example.com", "-t", "sink@example.com", f"{sink.host}:{sink.port}"],
        check=True,
        capture_output=True,
    )
    finished = sink.wait_for(before + messages, 60)
    return messages / (finished - started)


class ProcessTree:
    """Processes (and their descendants, found when measured): CPU seconds used and peak RSS."""

    def __init__(self, pids: list[int]) -> None:
        self.roots = pids

    def pids(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                stat = _stat(int(entry.name))
                if stat is not None:
                    children.setdefault(int(stat[3]), []).append(int(entry.name))
        found, todo = [], list(self.roots)
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += children.get(pid, [])
        return found

    def cpu_seconds(self) -> float:
        """User + system time of every process in the tree now (threads included)."""
        total = 0
        for pid in self.pids():
            stat = _stat(pid)
            if stat is not None:
                total += int(stat[13]) + int(stat[14])
        return total / TICKS

    def peak_rss_mb(self) -> float:
        """The sum of each process's peak resident set (VmHWM), in MiB."""
        total_kb = 0
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    total_kb += int(line.split()[1])
        return round(total_kb / 1024, 1)


# The services a deployment uses: their processes' command lines match these.
# pgrep -f patterns: the postmaster and its children, not every command line naming postgres.
SERVICES = {
    "postgres": "^postgres: |/bin/postgres( |$)",
    "tansu": "tansu",
    "redis": "redis-server",
}


def service_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of each service's processes now: the machine's whole
    PostgreSQL and Redis, so run nothing else meanwhile."""
    return {name: _own_cpu(_pids(pattern)) for name, pattern in SERVICES.items()}


def _pids(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(pid) for pid in found.split()]


def _own_cpu(pids: list[int]) -> float:
    """CPU seconds of these processes themselves (not their children)."""
    ticks = 0
    for pid in pids:
        stat = _stat(pid)
        if stat is not None:
            ticks += int(stat[13]) + int(stat[14])
    return ticks / TICKS


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields, the command name (which may hold spaces) as one."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    head, _, rest = raw.rpartition(")")
    return [head.split(" (", 1)[0], head.split(" (", 1)[1], *rest.split()]
