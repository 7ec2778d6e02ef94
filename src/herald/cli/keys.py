"""`herald keys`: create, list and revoke API keys of any tenant (the operator's tool)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from herald.cli.database import with_database
from herald.cli.errors import fail
from herald.clock import utcnow
from herald.store import api_keys
from herald.store.api_keys import ApiKey
from herald.store.database import Connection
from herald.tenancy import DEFAULT_TENANT, TENANT_PATTERN, valid_tenant

app = typer.Typer(
    help="Create, list and revoke API keys.", no_args_is_help=True, rich_markup_mode=None
)


def _line(key: ApiKey) -> str:
    state = "revoked" if key.revoked_at else ("expired" if not key.usable(utcnow()) else "active")
    expires = f"{key.expires_at:%Y-%m-%d}" if key.expires_at else "never"
    return (
        f"{key.id}  {key.tenant_id:<16} {key.prefix}…  {','.join(key.scopes):<16} "
        f"{state:<8} expires {expires:<10}  {key.name}"
    )


@app.command()
def create(
    name: Annotated[str, typer.Option(help="What the key is for, e.g. billing-service.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: send, read, admin.")] = "send,read",
    tenant: Annotated[str, typer.Option(help="The tenant the key acts for.")] = DEFAULT_TENANT,
    expires_in_days: Annotated[
        float | None, typer.Option(min=0.001, help="Expire after this many days [never].")
    ] = None,
) -> None:
    """A new key. It is printed once, on stdout; only its hash is stored."""
    chosen = sorted({s.strip() for s in scopes.split(",") if s.strip()})
    unknown = set(chosen) - set(api_keys.SCOPES)
    if unknown or not chosen:
        fail(f"--scopes: unknown {sorted(unknown) or 'none given'}; choose from send, read, admin")
    if not valid_tenant(tenant):
        fail(f"--tenant: {tenant!r} does not match {TENANT_PATTERN}")
    if not name.strip() or len(name) > 100:
        fail("--name: give 1 to 100 characters")
    now = utcnow()
    expires = None if expires_in_days is None else now + timedelta(days=expires_in_days)

    async def work(conn: Connection) -> tuple[ApiKey, str]:
        return await api_keys.create(conn, tenant, name, chosen, now=now, expires_at=expires)

    record, secret = with_database(work)
    typer.echo(f"created key {record.id} for tenant {tenant}; it is shown once:", err=True)
    typer.echo(secret)


@app.command("list")
def list_(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
) -> None:
    """Every key (never the keys themselves), oldest first."""

    async def work(conn: Connection) -> list[ApiKey]:
        return await api_keys.list_all(conn, tenant=tenant)

    found = with_database(work)
    for key in found:
        typer.echo(_line(key))
    typer.echo(f"{len(found)} key(s)")


@app.command()
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (from `list`).")]) -> None:
    """Revoke a key: refused by every API process within a few seconds."""

    async def work(conn: Connection) -> bool:
        return await api_keys.revoke(conn, key_id, tenant=None, now=utcnow())

    if not with_database(work):
        fail(f"key {key_id} not found")
    typer.echo(f"revoked {key_id}")
