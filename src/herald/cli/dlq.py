"""`herald dlq`: inspect, replay and purge dead letters from the command line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar

import typer

from herald.config import Settings
from herald.runtime import Runtime
from herald.store import deadletters
from herald.store.deadletters import DeadLetter, Filters

app = typer.Typer(
    help="Inspect, replay and purge dead letters.", no_args_is_help=True, rich_markup_mode=None
)
T = TypeVar("T")

Status = Annotated[str | None, typer.Option(help="DEAD (default) or REPLAYED; 'any' for both.")]
Channel = Annotated[str | None, typer.Option(help="Only this channel.")]
Reason = Annotated[str | None, typer.Option(help="permanent, exhausted, poison or refused.")]
Provider = Annotated[str | None, typer.Option(help="Only this provider.")]
ErrorClass = Annotated[
    str | None, typer.Option("--error-class", help="e.g. PermanentDeliveryError")
]
Since = Annotated[float | None, typer.Option(help="Only those that failed in the last N hours.")]


def _filters(
    status: str | None,
    channel: str | None,
    reason: str | None,
    provider: str | None,
    error_class: str | None,
    since_hours: float | None,
) -> Filters:
    since = None if since_hours is None else datetime.now(UTC) - timedelta(hours=since_hours)
    chosen_status = None if status == "any" else (status or deadletters.DEAD)
    return Filters(
        status=chosen_status,
        reason=reason,
        channel=channel,
        provider=provider,
        error_class=error_class,
        since=since,
    )


def _with_runtime(work: Callable[[Runtime], Awaitable[T]]) -> T:
    from herald.cli.settings import settings_or_exit

    settings: Settings = settings_or_exit()

    async def main() -> T:
        runtime = Runtime(settings)
        try:
            return await work(runtime)
        finally:
            await runtime.db.close()

    return asyncio.run(main())


def _line(letter: DeadLetter) -> str:
    where = letter.channel or letter.topic
    return (
        f"{letter.id}  {letter.status:<8} {letter.reason:<9} {where:<28} "
        f"{letter.error_class:<24} {letter.last_failed_at:%Y-%m-%d %H:%M:%S}  {letter.error[:60]}"
    )


@app.command("list")
def list_(
    status: Status = None,
    channel: Channel = None,
    reason: Reason = None,
    provider: Provider = None,
    error_class: ErrorClass = None,
    since: Since = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
) -> None:
    """Dead letters, newest first."""
    filters = _filters(status, channel, reason, provider, error_class, since)

    async def work(rt: Runtime) -> tuple[int, list[DeadLetter]]:
        async with rt.db.read() as conn:
            return await deadletters.count(conn, filters), await deadletters.list_page(
                conn, filters, limit=limit
            )

    total, letters = _with_runtime(work)
    for letter in letters:
        typer.echo(_line(letter))
    typer.echo(f"{len(letters)} shown of {total} matching")


@app.command()
def show(letter_id: str) -> None:
    """One dead letter in full, with its payload."""

    async def work(rt: Runtime) -> DeadLetter | None:
        async with rt.db.read() as conn:
            return await deadletters.get(conn, letter_id)

    letter = _with_runtime(work)
    if letter is None:
        typer.echo(f"herald: error: dead letter {letter_id} not found", err=True)
        raise typer.Exit(2)
    fields = asdict(letter)
    payload = fields.pop("payload")
    fields["payload"] = payload.decode(errors="backslashreplace")
    typer.echo(json.dumps(fields, indent=2, default=str))


@app.command()
def replay(
    letter_ids: Annotated[list[str] | None, typer.Argument(help="Dead letter ids.")] = None,
    all_matching: Annotated[
        bool, typer.Option("--all", help="Every one matching the filters.")
    ] = False,
    status: Status = None,
    channel: Channel = None,
    reason: Reason = None,
    provider: Provider = None,
    error_class: ErrorClass = None,
    since: Since = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what would be replayed.")
    ] = False,
) -> None:
    """Deliver dead letters again (idempotent; --all replays are spaced out)."""
    if bool(letter_ids) == all_matching:
        typer.echo("herald: error: give dead letter ids, or --all with filters", err=True)
        raise typer.Exit(2)
    ids = letter_ids or []

    async def work(rt: Runtime) -> list[str]:
        if all_matching:
            filters = _filters(status, channel, reason, provider, error_class, since)
            matched, letters, outcomes = await rt.replayer.replay_matching(
                filters, limit=limit, dry_run=dry_run
            )
            lines = [f"{matched} matching, {len(letters)} selected"]
            if dry_run:
                return lines + [f"would replay {_line(letter)}" for letter in letters]
            return lines + [f"{o.dead_letter_id}  {o.detail}" for o in outcomes]
        if dry_run:
            return [f"would replay {i}" for i in ids]
        return [
            f"{o.dead_letter_id}  {o.detail}" for o in [await rt.replayer.replay(i) for i in ids]
        ]

    for line in _with_runtime(work):
        typer.echo(line)


@app.command()
def purge(
    letter_ids: Annotated[list[str] | None, typer.Argument(help="Dead letter ids.")] = None,
    all_matching: Annotated[
        bool, typer.Option("--all", help="Every one matching the filters.")
    ] = False,
    status: Status = None,
    channel: Channel = None,
    reason: Reason = None,
    provider: Provider = None,
    error_class: ErrorClass = None,
    older_than: Annotated[float | None, typer.Option(help="Only those older than N days.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count them.")] = False,
) -> None:
    """Delete dead letters for good."""
    if bool(letter_ids) == all_matching:
        typer.echo("herald: error: give dead letter ids, or --all with filters", err=True)
        raise typer.Exit(2)
    filters = _filters(status, channel, reason, provider, error_class, None)
    if older_than is not None:
        filters = Filters(
            **{**asdict(filters), "until": datetime.now(UTC) - timedelta(days=older_than)}
        )

    async def work(rt: Runtime) -> int:
        async with rt.db.write() as conn:
            if letter_ids:
                return len(letter_ids) if dry_run else await deadletters.purge_ids(conn, letter_ids)
            return (
                await deadletters.count(conn, filters)
                if dry_run
                else await deadletters.purge(conn, filters)
            )

    count = _with_runtime(work)
    typer.echo(f"{'would purge' if dry_run else 'purged'} {count}")
