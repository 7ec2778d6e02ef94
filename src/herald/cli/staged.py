"""`herald staged`: the staged batches waiting to be written out (see "Staged batches" in the
README), and a retry now of those whose writing failed, once the cause is mended (the expander
otherwise waits out each one's backoff, and a failed batch holds back its tenant's later ones)."""

from __future__ import annotations

from typing import Annotated

import typer

from herald.cli.database import with_database
from herald.cli.errors import fail
from herald.clock import utcnow
from herald.store import staged_batches
from herald.store.database import Connection
from herald.store.staged_batches import Waiting

app = typer.Typer(
    help="Look at staged batches; retry failed ones now.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("list")
def list_(
    failed: Annotated[bool, typer.Option("--failed", help="Only those that failed.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
) -> None:
    """Batches waiting, oldest first: id, tenant, notifications, attempts, next try, error."""

    async def work(conn: Connection) -> list[Waiting]:
        return await staged_batches.listing(conn, failed=failed, limit=limit)

    found = with_database(work)
    for b in found:
        due = f"{b.next_try_at:%Y-%m-%d %H:%M:%S}" if b.next_try_at else "now"
        error = f"  {b.last_error}" if b.last_error else ""
        typer.echo(f"{b.id:<8} {b.tenant_id:<20} {b.count:>6} {b.attempts:>3} {due}{error}")
    typer.echo(f"{len(found)} staged batch(es)")


@app.command()
def retry(
    batch_ids: Annotated[list[int] | None, typer.Argument(help="Batch ids (see list).")] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="Every failed batch.")] = False,
) -> None:
    """Make failed batches due now: the expander writes them out at its next look."""
    if not batch_ids and not all_failed:
        fail("give batch ids, or --all-failed")
    if batch_ids and all_failed:
        fail("give batch ids or --all-failed, not both")
    chosen = None if all_failed else batch_ids

    async def work(conn: Connection) -> int:
        return await staged_batches.retry_now(conn, chosen, utcnow())

    count = with_database(work)
    typer.echo(f"{count} batch(es) due now")
