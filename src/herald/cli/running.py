"""Running a command's roles: the event loop, the exit, the collector settings, and what a
failure to start tells the operator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import sqlalchemy.exc
import typer

from herald import garbage
from herald.cli.errors import fail
from herald.config import Settings
from herald.errors import ConfigError

if TYPE_CHECKING:
    from herald.roles import Role
    from herald.runtime import Runtime


def run(coro: Coroutine[Any, Any, int], *, exit_when_done: bool = False) -> None:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    try:
        with runner:
            code = runner.run(coro)
            if exit_when_done:
                exit_after_stop(code)
    except ConfigError as exc:
        fail(str(exc))
    except (OSError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        fail(f"cannot reach the database: {exc}")
    raise typer.Exit(code)


def exit_after_stop(code: int) -> None:
    """Every role has stopped and the runtime is closed: all that matters is committed. What
    would remain is the interpreter's teardown, which joins executor threads (one stuck in a
    native call, a Kafka client leaving a group that never rebalances, would hold the exit
    for ever) and runs native destructors. None of it is ours to wait for: export buffered
    traces, flush the logs and end the process."""
    from herald.observability import otel
    from herald.supervisor import exit_now

    otel.shutdown()
    exit_now(code)


def run_roles(
    settings: Settings,
    build: Callable[[Runtime], dict[str, Role]],
    *,
    migrate: bool,
    service: str,
    load_rules: bool = False,
    warn: bool = True,
) -> None:
    from herald.observability import otel
    from herald.supervisor import hold_stop_signals

    # Before any thread starts (OpenTelemetry's exporter has one): SIGTERM and SIGINT go to
    # the supervisor's signal thread only.
    hold_stop_signals()
    try:
        otel.configure(settings.otel_exporter, service)
    except ConfigError as exc:
        fail(str(exc))

    async def main() -> int:
        from herald.runtime import running
        from herald.supervisor import supervise

        async with running(settings, migrate=migrate, load_rules=load_rules, warn=warn) as rt:
            roles = build(rt)
            garbage.settle()
            pacing = asyncio.create_task(garbage.pace(), name="garbage")
            try:
                return await supervise(roles, shutdown_timeout=settings.shutdown_timeout_seconds)
            finally:
                pacing.cancel()

    run(main(), exit_when_done=True)
