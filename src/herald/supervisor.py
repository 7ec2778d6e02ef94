"""Run roles side by side; stop all of them on SIGTERM/SIGINT or when one of them dies.

A role that ends on its own is a failure: the process stops loudly (exit 1) rather than
limping on without, say, its relay.

Stopping is bounded whatever the roles are doing. Once a stop begins, a watchdog thread
gives the whole process ``shutdown_timeout`` plus :data:`EXIT_GRACE` to end; past that it
exits at once, because a graceful stop that cannot finish (a broker call that never returns,
a thread the interpreter would wait for at exit) must not keep a worker holding its
partitions. A second signal exits at once too. Either way nothing is lost: what was not
committed is read again by the next owner, as after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time

from herald.observability.logging import get_logger
from herald.roles import Role

log = get_logger(__name__)

# What a stop may take beyond the roles' drain: the last commits, closing the bus and the
# database, the interpreter's exit.
EXIT_GRACE = 10.0


def exit_now(code: int) -> None:
    """End the process without waiting for anything (threads, executors, atexit)."""
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):  # the exit matters more than the last log line
            handler.flush()
    os._exit(code)


class Deadline:
    """A daemon thread that ends the process if it is still alive ``seconds`` after
    :meth:`arm`. Daemon: it never delays an exit, and it runs while the interpreter waits
    for other threads at exit, which is where a stuck stop would otherwise hang."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._armed = threading.Event()

    def arm(self, reason: str) -> None:
        if self._armed.is_set():
            return
        self._armed.set()
        threading.Thread(
            target=self._expire, args=(reason,), name="shutdown-deadline", daemon=True
        ).start()

    def _expire(self, reason: str) -> None:
        time.sleep(self.seconds)
        log.error("supervisor.deadline_exceeded", reason=reason, seconds=self.seconds)
        exit_now(1)


async def supervise(roles: dict[str, Role], *, shutdown_timeout: float) -> int:
    stop = asyncio.Event()
    deadline = Deadline(shutdown_timeout + EXIT_GRACE)
    loop = asyncio.get_running_loop()
    tasks = {asyncio.create_task(role(stop), name=name): name for name, role in roles.items()}

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("supervisor.forced_stop", signal=name)
            exit_now(128 + signum)
        log.info("supervisor.stopping", signal=name)
        deadline.arm(f"signal {name}")
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    log.info("supervisor.started", roles=",".join(roles))

    stopped = asyncio.create_task(stop.wait(), name="stop")
    exit_code = 0
    try:
        done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in (t for t in tasks if t in done):
            if stop.is_set() and not task.cancelled() and task.exception() is None:
                continue  # it finished because a signal asked it to, in the same instant
            exit_code = 1
            error = None if task.cancelled() else task.exception()
            log.error("supervisor.role_died", role=tasks[task], error=repr(error))
        deadline.arm("a role died")
        stop.set()
        pending = [t for t in tasks if not t.done()]
        if pending:
            # Roles drain within shutdown_timeout themselves; this is the backstop.
            _, late = await asyncio.wait(pending, timeout=shutdown_timeout + 1)
            for task in late:
                log.error("supervisor.role_stuck", role=tasks[task])
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=EXIT_GRACE / 2)
        failed = [
            (name, task.exception())
            for task, name in tasks.items()
            if task.done() and not task.cancelled() and task.exception() is not None
        ]
        if failed and exit_code == 0:
            exit_code = 1
            log.error("supervisor.role_failed", role=failed[0][0], error=repr(failed[0][1]))
    finally:
        stopped.cancel()
    # The signal handlers stay: a second signal during the rest of the stop (closing the bus
    # and the database) still exits at once.
    log.info("supervisor.stopped", exit_code=exit_code)
    return exit_code
