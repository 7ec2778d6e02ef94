"""`herald suppressions`: list, add and remove the addresses a tenant's notifications are not
sent to (as `/api/v1/suppressions` does, for any tenant: the operator's tool)."""

from __future__ import annotations

from typing import Annotated

import typer

from herald.cli.database import with_database
from herald.cli.errors import fail
from herald.clock import utcnow
from herald.domain.models import Channel
from herald.store import suppressions
from herald.store.database import Connection
from herald.store.suppressions import REASONS, Suppression
from herald.tenancy import DEFAULT_TENANT, TENANT_PATTERN, valid_tenant

app = typer.Typer(
    help="List, add and remove suppressed addresses.", no_args_is_help=True, rich_markup_mode=None
)
TenantOption = Annotated[str, typer.Option(help="Whose list.")]
ChannelArgument = Annotated[str, typer.Argument(help="email, sms, push, webpush, webhook, ...")]
AddressArgument = Annotated[str, typer.Argument(help="The address as notifications name it.")]


def _checked(tenant: str, channel: str, address: str) -> tuple[str, str]:
    if not valid_tenant(tenant):
        fail(f"--tenant: {tenant!r} does not match {TENANT_PATTERN}")
    if channel not in {c.value for c in Channel}:
        fail(f"channel: {channel!r} is none of {', '.join(c.value for c in Channel)}")
    if problem := suppressions.address_problem(channel, address):
        fail(f"address: {problem}")
    return channel, address.strip()


@app.command("list")
def list_(
    tenant: TenantOption = DEFAULT_TENANT,
    channel: Annotated[str | None, typer.Option(help="Only this channel's.")] = None,
) -> None:
    """The tenant's list, by channel and address."""

    async def work(conn: Connection) -> list[Suppression]:
        found: list[Suppression] = []
        while True:
            after = (found[-1].channel, found[-1].address) if found else None
            page = await suppressions.page(conn, tenant, channel=channel, after=after, limit=1000)
            found += page
            if len(page) < 1000:
                return found

    found = with_database(work)
    for s in found:
        detail = f"  {s.detail}" if s.detail else ""
        typer.echo(f"{s.channel:<8} {s.address:<40} {s.reason:<12} {s.created_at:%Y-%m-%d}{detail}")
    typer.echo(f"{len(found)} suppressed address(es)")


@app.command()
def add(
    channel: ChannelArgument,
    address: AddressArgument,
    tenant: TenantOption = DEFAULT_TENANT,
    reason: Annotated[str, typer.Option(help=", ".join(REASONS))] = "manual",
    detail: Annotated[str | None, typer.Option(help="A note: where it came from.")] = None,
) -> None:
    """Put an address on the list: routing skips it from now on."""
    channel, address = _checked(tenant, channel, address)
    if reason not in REASONS:
        fail(f"--reason: {reason!r} is none of {', '.join(REASONS)}")

    async def work(conn: Connection) -> bool:
        return await suppressions.add(
            conn, tenant, channel, address, reason=reason, detail=detail, now=utcnow()
        )

    added = with_database(work)
    typer.echo(f"{'suppressed' if added else 'already suppressed'}: {channel} {address}")


@app.command()
def remove(
    channel: ChannelArgument, address: AddressArgument, tenant: TenantOption = DEFAULT_TENANT
) -> None:
    """Take an address off the list: notifications to it are sent again."""
    channel, address = _checked(tenant, channel, address)

    async def work(conn: Connection) -> bool:
        return await suppressions.remove(conn, tenant, channel, address)

    if not with_database(work):
        fail(f"{channel} {address} is not suppressed")
    typer.echo(f"removed: {channel} {address}")
