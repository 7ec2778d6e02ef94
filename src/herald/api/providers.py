"""/api/v1/providers: the circuit breakers of the providers Herald is configured with.

The providers are shared by every tenant, and so is whether one is down; which worker
processes run where is the operator's business only. So the operator's (default) tenant sees
each worker's circuit, every other tenant one row per provider with its worst state. The
circuits of destinations that callers choose (per tenant, in worker memory) are not listed.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from herald.api.auth import Admin
from herald.api.limits import enforce_rate_limit
from herald.api.schemas import ProviderOut
from herald.observability.metrics import CIRCUIT_STATES
from herald.runtime import Runtime
from herald.store import circuits
from herald.store.circuits import CircuitRecord
from herald.tenancy import DEFAULT_TENANT

router = APIRouter(
    prefix="/api/v1/providers", tags=["providers"], dependencies=[Depends(enforce_rate_limit)]
)


@router.get("", response_model=list[ProviderOut], summary="Circuit state per provider")
async def list_providers(request: Request, principal: Admin) -> list[ProviderOut]:
    runtime: Runtime = request.app.state.runtime
    async with runtime.db.read() as conn:
        records = await circuits.list_all(conn)
    return shown_to(principal.tenant, records)


def shown_to(tenant: str, records: list[CircuitRecord]) -> list[ProviderOut]:
    """What ``tenant`` may see of the circuits (see the module docstring)."""
    if tenant == DEFAULT_TENANT:
        return [ProviderOut.model_validate(r, from_attributes=True) for r in records]
    return _per_provider(records)


def _per_provider(records: list[CircuitRecord]) -> list[ProviderOut]:
    """Each provider's worst state across workers, and their waits summed."""
    worst: dict[tuple[str, str], CircuitRecord] = {}
    waits: dict[tuple[str, str], tuple[int, float]] = {}
    for record in records:
        key = (record.provider, record.channel)
        seen = worst.get(key)
        if seen is None or CIRCUIT_STATES[record.state] > CIRCUIT_STATES[seen.state]:
            worst[key] = record
        count, seconds = waits.get(key, (0, 0.0))
        waits[key] = (count + record.rate_limit_waits, seconds + record.rate_limit_wait_seconds)
    return [
        ProviderOut(
            provider=r.provider,
            channel=r.channel,
            worker=None,
            state=r.state,
            consecutive_failures=r.consecutive_failures,
            opened_at=r.opened_at,
            updated_at=r.updated_at,
            rate_limit_waits=waits[key][0],
            rate_limit_wait_seconds=waits[key][1],
        )
        for key, r in sorted(worst.items())
    ]
