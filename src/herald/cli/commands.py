"""The `herald` command and its subcommands: serve, api, relay, worker, inbound, migrate, dlq,
keys, suppressions, staged."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from herald.cli.errors import fail
from herald.cli.running import run, run_roles
from herald.cli.settings import settings_or_exit
from herald.config import Settings, usable_cpus
from herald.errors import ConfigError

app = typer.Typer(
    name="herald",
    help="Herald: fault-tolerant, event-driven notifications.",
    no_args_is_help=True,
    add_completion=False,
    # Plain help: the rich one labels flags <bool>, as if they took a value.
    rich_markup_mode=None,
)


HostOption = Annotated[str | None, typer.Option(help="Address to listen on [HERALD_HOST].")]
PortOption = Annotated[int | None, typer.Option(help="Port to listen on [HERALD_PORT].")]


def _check_auth(settings: Settings, host: str) -> None:
    from herald.api.auth import check_auth_setting

    try:
        check_auth_setting(settings.auth, host)
    except ConfigError as exc:
        fail(str(exc))


@app.command()
def serve(host: HostOption = None, port: PortOption = None) -> None:
    """Run every role: API, relay, router, channel workers, status (the consumers in a second
    process when more than one core is usable)."""
    settings = settings_or_exit()
    from herald import roles

    listen = host or settings.host, settings.port if port is None else port
    _check_auth(settings, listen[0])
    # SQLite is this process's own; a shared PostgreSQL is migrated on purpose (`herald migrate`).
    on_sqlite = settings.database_url.startswith("sqlite")
    split = settings.serve_consumer_process == "on" or (
        settings.serve_consumer_process == "auto" and usable_cpus() > 1
    )
    run_roles(
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
    run_roles(
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

    run_roles(settings, roles.relay_roles, migrate=False, service="herald-relay")


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
    run_roles(
        settings,
        lambda rt: roles.worker_roles(rt, chosen, parent),
        migrate=False,
        service="herald-worker",
        warn=parent is None,
    )


@app.command()
def inbound() -> None:
    """Take bounces and complaints by SMTP for HERALD_BOUNCE_DOMAIN (its MX points here), on
    HERALD_INBOUND_HOST:HERALD_INBOUND_PORT."""
    settings = settings_or_exit()
    if settings.bounce_domain is None:
        fail("herald inbound needs HERALD_BOUNCE_DOMAIN: the domain of the return paths")
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        fail("herald inbound needs aiosmtpd: pip install 'herald[inbound]'")
    from herald import roles

    run_roles(settings, roles.inbound_roles, migrate=False, service="herald-inbound")


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

    run(main())


def _add_subcommands() -> None:
    from herald.cli.dlq import app as dlq
    from herald.cli.keys import app as keys
    from herald.cli.staged import app as staged
    from herald.cli.suppressions import app as suppressions

    app.add_typer(dlq, name="dlq")
    app.add_typer(keys, name="keys")
    app.add_typer(suppressions, name="suppressions")
    app.add_typer(staged, name="staged")


_add_subcommands()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
