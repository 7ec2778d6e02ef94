"""Providers (admin): each provider's circuit, per worker for the operator's tenant and its
worst state across workers for other tenants, as the API shows them; and the tenant's latest
failed attempts, with the provider's error."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from herald.api.context import runtime_of
from herald.api.providers import shown_to
from herald.console.render import admin_session, page
from herald.store import circuits, deliveries

router = APIRouter()
RECENT = 25  # failed attempts shown


@router.get("/console/providers")
async def provider_list(request: Request) -> Response:
    session = await admin_session(request, "Providers")
    if isinstance(session, Response):
        return session
    async with runtime_of(request).db.read() as conn:
        records = await circuits.list_all(conn)
        failures = await deliveries.recent_failures(conn, session.key.tenant_id, limit=RECENT)
    context = {
        "session": session,
        "providers": shown_to(session.key.tenant_id, records),
        "failures": failures,
    }
    return page(request, "providers.html", context)
