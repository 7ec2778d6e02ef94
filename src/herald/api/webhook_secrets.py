"""/api/v1/webhook-secret: an admin rotates its own tenant's webhook signing secret (the one
inline ``contacts.webhook_url`` deliveries are signed with) and sees when it was made.

Always the caller's tenant: there is no id in the path, so no other tenant's to name.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from herald.api.auth import Admin
from herald.api.context import runtime_of
from herald.api.limits import enforce_rate_limit
from herald.api.users import SecretRotation
from herald.clock import utcnow
from herald.store import tenant_secrets

router = APIRouter(
    prefix="/api/v1/webhook-secret",
    tags=["webhook-secret"],
    dependencies=[Depends(enforce_rate_limit)],
)


class TenantSecretOut(BaseModel):
    tenant: str = Field(description="The `tenant` that webhooks signed with it carry")
    created_at: datetime | None = Field(
        description="When the tenant first had one; null while it is HERALD_WEBHOOK_SECRET "
        "(the default tenant, until its first rotation)"
    )
    rotated_at: datetime | None = Field(description="When the current one was made by a rotation")
    webhook_secrets_active: int = Field(description="2 while a rotation is in its grace period")
    old_secrets_expire_at: datetime | None = Field(
        description="When the older secrets still signing stop; null when only one signs"
    )


class RotatedTenantSecretOut(BaseModel):
    tenant: str
    webhook_secret: str = Field(description="The new secret: shown in this response only")
    old_secrets_expire_at: datetime


@router.get("", response_model=TenantSecretOut)
async def get_webhook_secret(request: Request, principal: Admin) -> TenantSecretOut:
    """The tenant's webhook signing secret, without the secret itself (rotate to get one);
    made now if the tenant has none yet."""
    runtime = runtime_of(request)
    tenant, now = principal.tenant, utcnow()
    found = await tenant_secrets.current(
        runtime.db, tenant, now=now, fallback=runtime.webhook_secret_fallback(tenant)
    )
    return TenantSecretOut(
        tenant=tenant,
        created_at=found.created_at,
        rotated_at=found.rotated_at,
        webhook_secrets_active=len(found.signing_secrets(now)),
        old_secrets_expire_at=found.grace_ends_at(now),
    )


@router.post("/rotate", response_model=RotatedTenantSecretOut)
async def rotate_webhook_secret(
    request: Request, principal: Admin, payload: SecretRotation | None = None
) -> RotatedTenantSecretOut:
    """A new signing secret, shown once; the old one keeps signing during the grace period
    (webhooks carry a signature per secret), so receivers switch over without a gap."""
    runtime = runtime_of(request)
    tenant, now = principal.tenant, utcnow()
    grace = timedelta(seconds=(payload or SecretRotation()).grace_seconds)
    async with runtime.db.write() as conn:
        secret = await tenant_secrets.rotate(
            conn, tenant, grace=grace, now=now, fallback=runtime.webhook_secret_fallback(tenant)
        )
    return RotatedTenantSecretOut(
        tenant=tenant, webhook_secret=secret, old_secrets_expire_at=now + grace
    )
