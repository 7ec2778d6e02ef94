"""`herald serve` on more than one core: the consumers run in a second process.

The API, the relay and housekeeping stay in `herald serve`'s process; the router, the status
consumer and the channel workers run in a child (`herald worker`, started and watched here), so
the two halves of the pipeline get a core each instead of sharing one. They share the database
(SQLite in WAL mode takes writers from several processes) and are joined by:

- a wake-up link (a socket pair): a commit in one process wakes the waiters in the other at
  once, as within one process; a wake-up that is lost (a full socket buffer) costs only the
  poll interval;
- a loopback socket the parent opens for the child's /metrics and /readyz: the parent's
  /metrics serves both processes' metrics (``observability.merge``), its /readyz the child's
  readiness too.

The child dies with the parent (PR_SET_PDEATHSIG on Linux; elsewhere it stops when the link
closes); the parent stops, exit 1, when the child ends, like any role that ends on its own.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx

from herald.api.server import bind
from herald.observability.logging import get_logger
from herald.runtime import Runtime
from herald.wakeup import Wakeup, came_before_stop

log = get_logger(__name__)

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ParentLink:
    """What a consumer process got from `herald serve`: the link's and the probe's sockets."""

    link_fd: int
    probe_fd: int


def linked_wakeups(rt: Runtime) -> dict[str, Wakeup]:
    """The wake-ups a commit in one process fires for waiters that may be in the other."""
    wakeups = {"outbox": rt.outbox_wakeup, "inbox": rt.inbox_wakeup}
    bus_wakeup = getattr(rt.bus, "wakeup", None)  # the embedded bus's; Kafka wakes its own
    if isinstance(bus_wakeup, Wakeup):
        wakeups["bus"] = bus_wakeup
    return wakeups


class WakeupLink:
    """Forwards every notify of ``wakeups`` through ``sock`` (a SOCK_SEQPACKET end) and
    notifies the local ones for what arrives from the other end. ``closed`` is set when the
    other end is gone."""

    def __init__(self, sock: socket.socket, wakeups: dict[str, Wakeup]) -> None:
        self.sock = sock
        self.wakeups = wakeups
        self.closed = asyncio.Event()

    def start(self) -> None:
        self.sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._receive)
        for name, wakeup in self.wakeups.items():
            wakeup.forward(partial(self._send, name))

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
        self.closed.set()

    def _send(self, name: str, topics: Collection[str] | None) -> None:
        if self.closed.is_set():
            return
        payload = [name, None if topics is None else sorted(topics)]
        try:
            self.sock.send(json.dumps(payload).encode())
        except (BlockingIOError, InterruptedError):
            pass  # the other side is behind; its poll finds the work a moment later
        except OSError:
            self.close()

    def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:  # the other process is gone
                self.close()
                return
            name, topics = json.loads(data)
            wakeup = self.wakeups.get(name)
            if wakeup is not None:
                wakeup.notify_here(topics)


class ConsumerProcess:
    """The parent's side: starts `herald worker` with the link and the probe socket, and runs
    until asked to stop (then stops the child and waits for it) or until the child ends."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._parent_end, self._child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._probe = bind("127.0.0.1", 0)
        port = self._probe.getsockname()[1]
        #: The child's /metrics and /readyz.
        self.url = f"http://127.0.0.1:{port}"
        #: Set once the child answers: the API waits for it, so that `herald serve` answering
        #: means, as in one process, that every role runs.
        self.up = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        link = WakeupLink(self._parent_end, linked_wakeups(self.rt))
        link.start()
        fds = (self._child_end.fileno(), self._probe.fileno())
        command = [sys.executable, "-m", "herald", "worker", "--parent-pid", str(os.getpid())]
        command += ["--link-fd", str(fds[0]), "--probe-fd", str(fds[1])]
        child = await asyncio.create_subprocess_exec(*command, pass_fds=fds)
        self._child_end.close()  # the child holds them now
        self._probe.close()
        log.info("consumer_process.started", pid=child.pid, probe=self.url)
        exited = asyncio.ensure_future(child.wait())
        stopping = asyncio.ensure_future(stop.wait())
        answering = asyncio.ensure_future(self._until_answering())
        try:
            await asyncio.wait({exited, stopping, answering}, return_when=asyncio.FIRST_COMPLETED)
            if answering.done():
                self.up.set()
                await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                child.send_signal(signal.SIGTERM)  # it drains; the supervisor bounds the wait
                await exited
                log.info("consumer_process.stopped", pid=child.pid, code=child.returncode)
                return
            raise RuntimeError(f"the consumer process ended with exit code {child.returncode}")
        finally:
            stopping.cancel()
            answering.cancel()
            if child.returncode is None:
                child.kill()
            link.close()

    async def _until_answering(self) -> None:
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                try:
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)


def die_with_parent(parent_pid: int) -> None:
    """In the child: be killed when `herald serve` dies, even by kill -9 (Linux); exit now if
    it is gone already."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the link closing stops this process instead
    if os.getppid() != parent_pid:
        raise SystemExit("herald serve, which started this process, is gone")


def link_role(rt: Runtime, fd: int) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """In the child: the link as a role; it ends, stopping the process, if the parent goes."""

    async def run(stop: asyncio.Event) -> None:
        link = WakeupLink(socket.socket(fileno=fd), linked_wakeups(rt))
        link.start()
        if await came_before_stop(link.closed, stop):
            raise RuntimeError("herald serve, which started this process, is gone")
        link.close()

    return run
