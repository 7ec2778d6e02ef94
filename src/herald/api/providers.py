"""/api/v1/providers: each worker's circuit breaker per provider."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from herald.api.auth import Admin
from herald.api.limits import enforce_rate_limit
from herald.api.schemas import ProviderOut
from herald.runtime import Runtime
from herald.store import circuits

router = APIRouter(
    prefix="/api/v1/providers", tags=["providers"], dependencies=[Depends(enforce_rate_limit)]
)


@router.get("", response_model=list[ProviderOut], summary="Circuit state per provider and worker")
async def list_providers(request: Request, principal: Admin) -> list[ProviderOut]:
    """Operators' view (shared by every tenant): admin scope."""
    runtime: Runtime = request.app.state.runtime
    async with runtime.db.read() as conn:
        records = await circuits.list_all(conn)
    return [ProviderOut.model_validate(r, from_attributes=True) for r in records]
