"""Run roles side by side; stop all of them on SIGTERM/SIGINT or when one of them dies.

A role that ends on its own is a failure: the process stops loudly (exit 1) rather than
limping on without, say, its relay. A second signal abandons the graceful drain.
"""

from __future__ import annotations

import asyncio
import signal

from herald.observability.logging import get_logger
from herald.roles import Role

log = get_logger(__name__)


async def supervise(roles: dict[str, Role], *, shutdown_timeout: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    tasks = {asyncio.create_task(role(stop), name=name): name for name, role in roles.items()}

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("supervisor.forced_stop", signal=signal.Signals(signum).name)
            for task in tasks:
                task.cancel()
        else:
            log.info("supervisor.stopping", signal=signal.Signals(signum).name)
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
        stop.set()
        pending = [t for t in tasks if not t.done()]
        if pending:
            # Roles drain within shutdown_timeout themselves; this is the backstop.
            _, late = await asyncio.wait(pending, timeout=shutdown_timeout + 5)
            for task in late:
                log.error("supervisor.role_stuck", role=tasks[task])
                task.cancel()
            if late:
                await asyncio.wait(late)
        for task, name in tasks.items():
            if not task.cancelled() and task.exception() is not None and exit_code == 0:
                exit_code = 1
                log.error("supervisor.role_failed", role=name, error=repr(task.exception()))
    finally:
        stopped.cancel()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("supervisor.stopped", exit_code=exit_code)
    return exit_code
