"""The `herald` command."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Annotated, Any

import sqlalchemy.exc
import typer
from pydantic import ValidationError

from herald.config import Settings
from herald.errors import ConfigError
from herald.observability.logging import configure_logging, get_logger

app = typer.Typer(
    name="herald",
    help="Herald: fault-tolerant, event-driven notifications.",
    no_args_is_help=True,
    add_completion=False,
)
log = get_logger("herald.cli")


def _settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"HERALD_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        _fail(f"invalid configuration: {problems}")
    configure_logging(settings.log_level)
    return settings


def _fail(message: str) -> typer.Exit:
    typer.echo(f"herald: error: {message}", err=True)
    raise typer.Exit(2)


def _run(coro: Coroutine[Any, Any, int]) -> None:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    try:
        with runner:
            code = runner.run(coro)
    except ConfigError as exc:
        _fail(str(exc))
    except (OSError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        _fail(f"cannot reach the database: {exc}")
    raise typer.Exit(code)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [HERALD_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [HERALD_PORT].")] = None,
) -> None:
    """Run every role in one process: API, relay, router, channel workers, status."""
    settings = _settings()

    async def main() -> int:
        from herald import roles
        from herald.runtime import running
        from herald.supervisor import supervise

        # SQLite is this process's own; PostgreSQL is migrated on purpose (`herald migrate`).
        async with running(settings, migrate=settings.database_url.startswith("sqlite")) as rt:
            return await supervise(
                roles.all_roles(rt, host or settings.host, settings.port if port is None else port),
                shutdown_timeout=settings.shutdown_timeout_seconds,
            )

    _run(main())


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema to this version of Herald."""
    settings = _settings()

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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
