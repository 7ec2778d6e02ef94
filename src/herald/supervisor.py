"""Run roles side by side; stop all of them on SIGTERM/SIGINT or when one of them dies.

A role that ends on its own is a failure: the process stops loudly (exit 1) rather than
limping on without, say, its relay.

Stopping is bounded whatever the roles are doing. Once a stop begins, a watchdog thread
gives the whole process ``shutdown_timeout`` plus :data:`EXIT_GRACE` to end; past that it
exits at once, because a graceful stop that cannot finish (a broker call that never returns,
a thread the interpreter would wait for at exit) must not keep a worker holding its
partitions. A second signal exits at once too. Either way nothing is lost: what was not
committed is read again by the next owner, as after a crash.

Signals are received by a thread of their own (``sigwait``; :func:`hold_stop_signals` blocks
them everywhere else before any thread starts), not by the event loop: a loop stuck in a call
that never returns (a native client's destructor, say) would never run a handler, and the
signal would seem ignored. A signal that reaches a thread started before that (an agent's)
is passed on to the signal thread (:func:`forward_stop_signals`).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import itertools
import logging
import os
import signal
import sys
import threading
import time

from herald.observability.logging import get_logger
from herald.roles import Role

log = get_logger(__name__)

# What a stop may take beyond the roles' drain: the last commits, closing the bus and the
# database, the interpreter's exit.
EXIT_GRACE = 10.0
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def hold_stop_signals() -> None:
    """Block SIGTERM and SIGINT in this thread and every thread it starts from now on, so
    that only the supervisor's signal thread receives them. Call it first thing, before any
    thread exists (threads inherit the mask of the thread that starts them)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def forward_stop_signals(receiver: threading.Thread) -> None:
    """A thread started before :func:`hold_stop_signals` (by an agent loaded at start-up, say)
    does not block the stop signals, so the kernel may hand it one: handled here, in the main
    thread, and passed on to ``receiver``'s sigwait, instead of killing the process
    (SIGTERM's default) or raising KeyboardInterrupt somewhere in the loop (SIGINT's)."""

    def forward(signum: int, _frame: object) -> None:
        assert receiver.ident is not None
        signal.pthread_kill(receiver.ident, signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, forward)


def exit_now(code: int) -> None:
    """End the process without waiting for anything (threads, executors, atexit)."""
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):  # the exit matters more than the last log line
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
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
        # Where it was stuck, for whoever reads the log: every thread's stack, on stderr.
        faulthandler.dump_traceback(all_threads=True)
        exit_now(1)


async def supervise(roles: dict[str, Role], *, shutdown_timeout: float) -> int:
    stop = asyncio.Event()
    deadline = Deadline(shutdown_timeout + EXIT_GRACE)
    loop = asyncio.get_running_loop()
    tasks = {asyncio.create_task(role(stop), name=name): name for name, role in roles.items()}

    def on_signals() -> None:
        """The signal thread: the first signal starts the stop, the second ends the process;
        neither needs the event loop to be free."""
        for count in itertools.count():
            signum = signal.sigwait(STOP_SIGNALS)
            name = signal.Signals(signum).name
            if count or stop.is_set():
                log.warning("supervisor.forced_stop", signal=name)
                exit_now(128 + signum)
            log.info("supervisor.stopping", signal=name)
            deadline.arm(f"signal {name}")
            loop.call_soon_threadsafe(stop.set)

    hold_stop_signals()  # (already, if the command did it first; here for any other caller)
    signals = threading.Thread(target=on_signals, name="signals", daemon=True)
    signals.start()
    forward_stop_signals(signals)
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
    # The signal thread stays: a second signal during the rest of the stop (closing the bus
    # and the database) still exits at once.
    log.info("supervisor.stopped", exit_code=exit_code)
    return exit_code
