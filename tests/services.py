"""Find (or start) the real services tests need; in CI a missing service fails, never skips."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

POSTGRES_HOST = os.environ.get("HERALD_TEST_PG_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("HERALD_TEST_PG_PORT", "5432"))
POSTGRES_ADMIN_URL = f"postgresql://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres"
POSTGRES_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a private loop in another thread.

    Sync fixtures use this so they never touch the event loop pytest-asyncio manages.
    """
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


# Ports handed to tests come from a range of each pytest-xdist worker's own, below the
# kernel's ephemeral ports (32768 and up by default), taken in turn. A port a test lets go of
# for a while (a server it stops and starts again on the same port, a port meant to stay
# closed) is then never handed to the other worker's test meanwhile, nor to a connection's
# local end, as a port the kernel picks (bind to port 0) could be.
FIRST_TEST_PORT, PORTS_PER_WORKER = 20_000, 1_500
_port_lock = threading.Lock()


def _worker_ports() -> Iterator[int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # not under xdist: the first
    first = FIRST_TEST_PORT + int(worker.removeprefix("gw") or 0) * PORTS_PER_WORKER
    return itertools.cycle(range(first, first + PORTS_PER_WORKER))


_ports = _worker_ports()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, this worker's next (see _worker_ports)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with _port_lock:
        for _ in range(PORTS_PER_WORKER):
            port = next(_ports)
            with socket.socket(family) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue  # in use (another service, a connection in TIME_WAIT)
                return port
    raise RuntimeError(f"none of this worker's {PORTS_PER_WORKER} test ports is free")


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def unavailable(service: str, detail: str) -> None:
    message = f"{service} is not reachable: {detail}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: required services must run)", pytrace=False)
    pytest.skip(message)


_postgres_checked: bool | None = None


def require_postgres() -> None:
    """Check PostgreSQL answers; try its start command once if it does not."""
    global _postgres_checked
    if _postgres_checked:
        return
    if not port_open(POSTGRES_HOST, POSTGRES_PORT):
        if _postgres_checked is None:
            subprocess.run(POSTGRES_START, shell=True, capture_output=True, timeout=60)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not port_open(POSTGRES_HOST, POSTGRES_PORT):
                time.sleep(0.5)
        if not port_open(POSTGRES_HOST, POSTGRES_PORT):
            _postgres_checked = False
            unavailable("PostgreSQL", f"{POSTGRES_HOST}:{POSTGRES_PORT} (tried: {POSTGRES_START})")
    _postgres_checked = True


REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_START = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
)
_redis_checked: bool | None = None


def require_redis() -> None:
    """Check the shared Redis answers; try its start command once if it does not."""
    global _redis_checked
    if _redis_checked:
        return
    if not port_open(REDIS_HOST, REDIS_PORT):
        if _redis_checked is None:
            subprocess.run(REDIS_START, shell=True, capture_output=True, timeout=30)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not port_open(REDIS_HOST, REDIS_PORT):
                time.sleep(0.2)
        if not port_open(REDIS_HOST, REDIS_PORT):
            _redis_checked = False
            unavailable("Redis", f"{REDIS_HOST}:{REDIS_PORT} (tried: {REDIS_START})")
    _redis_checked = True


class PrivateRedis:
    """A redis-server of the test's own on a free port, so a test may stop it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server", "not installed")
        args = [str(binary), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", self.port, timeout=0.2):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                unavailable("redis-server", "did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb in a temporary folder, run as the
    postgres user, on a free port), so that a test may stop and start it. The shared server
    is never touched."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.datadir = workdir / "pgdata"
        self.socketdir = workdir / "pgsocket"
        self.logfile = workdir / "postgres.log"
        binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        self.bin = binaries[-1].parent if binaries else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str, timeout: float = 60) -> None:
        command = ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}")

    def init(self) -> PrivatePostgres:
        if self.bin is None:
            unavailable("PostgreSQL binaries", "no /usr/lib/postgresql/*/bin/initdb")
        for folder in (self.datadir, self.socketdir):
            folder.mkdir(parents=True)
            if os.geteuid() == 0:
                shutil.chown(folder, "postgres", "postgres")
        if os.geteuid() == 0:
            shutil.chown(self.datadir.parent, "postgres", "postgres")
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.datadir), "-A", "trust", "-U", "postgres"
        )
        return self

    def start(self) -> PrivatePostgres:
        options = f"-p {self.port} -k {self.socketdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.logfile),
            "-o",
            options,
            "-w",
            "start",
        )
        return self

    def stop(self) -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"
        )
