"""The `herald` command."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any

import sqlalchemy.exc
import typer

from herald.cli_errors import fail
from herald.cli_settings import settings_or_exit
from herald.config import Settings, usable_cpus
from herald.errors import ConfigError
from herald.observability.logging import get_logger

if TYPE_CHECKING:
    from herald.roles import Role
    from herald.runtime import Runtime

app = typer.Typer(
    name="herald",
    help="Herald: fault-tolerant, event-driven notifications.",
    no_args_is_help=True,
    add_completion=False,
    # Plain help: the rich one labels flags <bool>, as if they took a value.
    rich_markup_mode=None,
)
log = get_logger("herald.cli")


def _run(coro: Coroutine[Any, Any, int], *, exit_when_done: bool = False) -> None:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    try:
        with runner:
            code = runner.run(coro)
            if exit_when_done:
                _exit_after_stop(code)
    except ConfigError as exc:
        fail(str(exc))
    except (OSError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        fail(f"cannot reach the database: {exc}")
    raise typer.Exit(code)


def _exit_after_stop(code: int) -> None:
    """Every role has stopped and the runtime is closed: all that matters is committed. What
    would remain is the interpreter's teardown, which joins executor threads (one stuck in a
    native call, a Kafka client leaving a group that never rebalances, would hold the exit
    for ever) and runs native destructors. None of it is ours to wait for: export buffered
    traces, flush the logs and end the process."""
    from herald.observability import otel
    from herald.supervisor import exit_now

    otel.shutdown()
    exit_now(code)


HostOption = Annotated[str | None, typer.Option(help="Address to listen on [HERALD_HOST].")]
PortOption = Annotated[int | None, typer.Option(help="Port to listen on [HERALD_PORT].")]


def _run_roles(
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
            _settle_garbage_collection()
            return await supervise(roles, shutdown_timeout=settings.shutdown_timeout_seconds)

    _run(main(), exit_when_done=True)


# Objects allocated between young-generation collections (CPython's default: 2000). A
# service's requests allocate many short-lived objects; collecting less often costs a little
# memory and saves CPU and, above all, the long pauses of full collections under load.
_GC_YOUNG_THRESHOLD = 50_000


def _settle_garbage_collection() -> None:
    """Everything allocated at start-up (modules, the app, compiled statements) lives as long as
    the process: move it out of the collector's sight (gc.freeze), so full collections walk only
    what was allocated since, and collect the young generation less often."""
    import gc

    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, middle, old)


def _check_auth(settings: Settings, host: str) -> None:
    from herald.api.auth import check_auth_setting

    try:
        check_auth_setting(settings.auth, host)
    except ConfigError as exc:
        fail(str(exc))


@app.command()
def serve(host: HostOption = None, port: PortOption = None) -> None:
    """Run every role in one process: API, relay, router, channel workers, status."""
    settings = settings_or_exit()
    from herald import roles

    listen = host or settings.host, settings.port if port is None else port
    _check_auth(settings, listen[0])
    # SQLite is this process's own; a shared PostgreSQL is migrated on purpose (`herald migrate`).
    on_sqlite = settings.database_url.startswith("sqlite")
    split = settings.serve_consumer_process == "on" or (
        settings.serve_consumer_process == "auto" and usable_cpus() > 1
    )
    _run_roles(
        settings,
        lambda rt: roles.all_roles(rt, *listen, consumer_process=split),
        migrate=on_sqlite,
        service="herald",
        load_rules=True,
    )


@app.command()
def api(host: HostOption = None, port: PortOption = None) -> None:
    """Run the HTTP API only; scale it by running more."""
    settings = settings_or_exit()
    from herald import roles

    listen = host or settings.host, settings.port if port is None else port
    _check_auth(settings, listen[0])
    _run_roles(
        settings,
        lambda rt: {"api": roles.api(rt, *listen)},
        migrate=False,
        service="herald-api",
        load_rules=True,
    )


@app.command()
def relay() -> None:
    """Run the outbox relay (and housekeeping); several may run at once."""
    settings = settings_or_exit()
    from herald import roles

    _run_roles(settings, roles.relay_roles, migrate=False, service="herald-relay")


@app.command()
def worker(
    channels: Annotated[
        str | None,
        typer.Option(help="Comma-separated channels this worker delivers [all configured]."),
    ] = None,
    # Given by `herald serve` when it starts this process as its consumer process.
    parent_pid: Annotated[int | None, typer.Option(hidden=True)] = None,
    link_fd: Annotated[int | None, typer.Option(hidden=True)] = None,
    probe_fd: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run the router, the status consumer and channel workers; scale by running more."""
    settings = settings_or_exit()
    from herald import roles
    from herald.channels import available_channels
    from herald.runtime import CHANNELS

    try:
        configured = available_channels(settings)
    except ConfigError as exc:
        fail(str(exc))
    chosen = (
        configured if channels is None else [c.strip() for c in channels.split(",") if c.strip()]
    )
    unknown = sorted(set(chosen) - set(CHANNELS))
    if unknown or not chosen:
        fail(f"--channels: unknown {unknown or 'none given'}; choose from {', '.join(CHANNELS)}")
    unconfigured = sorted(set(chosen) - set(configured))
    if unconfigured:
        fail(f"--channels: no provider configured for {', '.join(unconfigured)} (HERALD_PROVIDERS)")
    parent = None
    if parent_pid is not None and link_fd is not None and probe_fd is not None:
        from herald.consumer_process import ParentLink, die_with_parent
        from herald.observability.logging import tag_every_line

        die_with_parent(parent_pid)
        tag_every_line(process="consumers")
        parent = ParentLink(link_fd, probe_fd)
    _run_roles(
        settings,
        lambda rt: roles.worker_roles(rt, chosen, parent),
        migrate=False,
        service="herald-worker",
        warn=parent is None,
    )


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema to this version of Herald."""
    settings = settings_or_exit()

    async def main() -> int:
        from herald.store.database import Database
        from herald.store.migrate import current_revision, upgrade

        db = Database(settings.database_url)
        try:
            await upgrade(db)
            typer.echo(f"database at revision {await current_revision(db)}")
        finally:
            await db.close()
        return 0

    _run(main())


def _add_subcommands() -> None:
    from herald.dlq_cli import app as dlq
    from herald.keys_cli import app as keys

    app.add_typer(dlq, name="dlq")
    app.add_typer(keys, name="keys")


_add_subcommands()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
