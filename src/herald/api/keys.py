"""/api/v1/keys: an admin creates, lists and revokes its own tenant's API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from herald.api.auth import Admin
from herald.api.context import runtime_of
from herald.api.errors import FieldError
from herald.api.limits import enforce_rate_limit
from herald.api.schemas import ErrorOut, Timestamp
from herald.clock import utcnow
from herald.errors import NotFoundError
from herald.store import api_keys
from herald.store.api_keys import ApiKey

router = APIRouter(prefix="/api/v1/keys", tags=["keys"], dependencies=[Depends(enforce_rate_limit)])
KeyId = Annotated[str, Path(min_length=1, max_length=36)]
Scope = Literal["send", "read", "admin"]
_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}


class KeyIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "billing-service", "scopes": ["send"]}]},
    )

    name: str = Field(min_length=1, max_length=100, pattern=r"^[\x20-\x7e]+$")
    scopes: list[Scope] = Field(min_length=1, max_length=3)
    expires_at: Timestamp | None = None


class KeyOut(BaseModel):
    id: str
    tenant: str
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it")
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls(
            id=key.id,
            tenant=key.tenant_id,
            name=key.name,
            prefix=key.prefix,
            scopes=key.scopes,
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
            last_used_at=key.last_used_at,
        )


class CreatedKeyOut(KeyOut):
    key: str = Field(description="The key itself: shown this once, never stored")


@router.post(
    "", status_code=201, response_model=CreatedKeyOut, responses={422: {"model": ErrorOut}}
)
async def create_key(payload: KeyIn, request: Request, principal: Admin) -> CreatedKeyOut:
    """A new key for the caller's tenant. Copy `key` now: only its hash is kept."""
    now = utcnow()
    if payload.expires_at is not None and payload.expires_at <= now:
        raise FieldError("expires_at", "is in the past")
    async with runtime_of(request).db.write() as conn:
        record, secret = await api_keys.create(
            conn,
            principal.tenant,
            payload.name,
            list(payload.scopes),
            now=now,
            expires_at=payload.expires_at,
        )
    request.app.state.authenticator.key_created()  # an API open until now closes at once
    return CreatedKeyOut(**KeyOut.of(record).model_dump(), key=secret)


@router.get("", response_model=list[KeyOut])
async def list_keys(request: Request, principal: Admin) -> list[KeyOut]:
    async with runtime_of(request).db.read() as conn:
        return [KeyOut.of(k) for k in await api_keys.list_all(conn, tenant=principal.tenant)]


@router.get("/{key_id}", response_model=KeyOut, responses=_404)
async def get_key(key_id: KeyId, request: Request, principal: Admin) -> KeyOut:
    async with runtime_of(request).db.read() as conn:
        found = await api_keys.get(conn, key_id, tenant=principal.tenant)
    if found is None:
        raise NotFoundError(f"key {key_id} not found")
    return KeyOut.of(found)


@router.delete("/{key_id}", status_code=204, responses=_404)
async def revoke_key(key_id: KeyId, request: Request, principal: Admin) -> Response:
    """Revoke: refused everywhere within a few seconds (each process caches keys briefly)."""
    async with runtime_of(request).db.write() as conn:
        if not await api_keys.revoke(conn, key_id, tenant=principal.tenant, now=utcnow()):
            raise NotFoundError(f"key {key_id} not found")
    return Response(status_code=204)
