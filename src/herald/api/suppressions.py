"""/api/v1/suppressions: the tenant's suppression list, per channel — list, look up, add
(import) and remove. Routing skips an address on it (``skip_reason: suppressed``)."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.convertors import Convertor, register_url_convertor

from herald.api.auth import Admin, Reader
from herald.api.context import runtime_of
from herald.api.errors import FieldError
from herald.api.limits import enforce_rate_limit
from herald.api.schemas import ErrorOut
from herald.clock import utcnow
from herald.domain.models import Channel
from herald.errors import NotFoundError
from herald.observability import metrics
from herald.observability.logging import get_logger
from herald.store import suppressions
from herald.store.suppressions import Suppression


class _Anything(Convertor[str]):
    """A path's rest, slashes and line breaks included (Starlette's ``path`` stops at a line
    break, so an address with one was a 404 rather than a 422 naming it: see check_path)."""

    regex = "(?s:.+)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anything", _Anything())

router = APIRouter(
    prefix="/api/v1/suppressions",
    tags=["suppressions"],
    dependencies=[Depends(enforce_rate_limit)],
)
log = get_logger(__name__)
_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}
Address = Annotated[
    str,
    Path(
        min_length=1,
        max_length=1024,
        description="The address as notifications name it (an email address, a phone number, "
        "a push token, ...); URL-encoded",
    ),
]


class SuppressionOut(BaseModel):
    channel: str
    address: str = Field(description="As the list keeps it: email addresses in lower case")
    reason: str = Field(description="hard_bounce, complaint, unsubscribe or manual")
    detail: str | None = Field(description="What caused it: the receipt, or the importer's note")
    created_at: datetime

    @classmethod
    def of(cls, s: Suppression) -> SuppressionOut:
        return cls(
            channel=s.channel,
            address=s.address,
            reason=s.reason,
            detail=s.detail,
            created_at=s.created_at,
        )


class SuppressionPage(BaseModel):
    items: list[SuppressionOut]
    next_cursor: str | None


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Literal["hard_bounce", "complaint", "unsubscribe", "manual"] = "manual"
    detail: str | None = Field(default=None, max_length=1000)


def _checked(channel: Channel, address: str) -> str:
    if problem := suppressions.address_problem(channel.value, address):
        raise FieldError("address", problem)
    return address.strip()


@router.get("", response_model=SuppressionPage, responses={422: {"model": ErrorOut}})
async def list_suppressions(
    request: Request,
    principal: Reader,
    channel: Channel | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=3000)] = None,
) -> SuppressionPage:
    """The list in order of channel and address, a page at a time."""
    after = _decode(cursor) if cursor else None
    async with runtime_of(request).db.read() as conn:
        found = await suppressions.page(
            conn,
            principal.tenant,
            channel=None if channel is None else channel.value,
            after=after,
            limit=limit + 1,
        )
    shown = found[:limit]
    more = _encode(shown[-1]) if len(found) > limit else None
    return SuppressionPage(items=[SuppressionOut.of(s) for s in shown], next_cursor=more)


@router.get("/{channel}/{address:anything}", response_model=SuppressionOut, responses=_404)
async def get_suppression(
    channel: Channel, address: Address, request: Request, principal: Reader
) -> SuppressionOut:
    async with runtime_of(request).db.read() as conn:
        found = await suppressions.get(
            conn, principal.tenant, channel.value, _checked(channel, address)
        )
    if found is None:
        raise NotFoundError(f"{channel.value} address {address!r} is not suppressed")
    return SuppressionOut.of(found)


@router.put(
    "/{channel}/{address:anything}",
    response_model=SuppressionOut,
    responses={201: {"description": "Added", "model": SuppressionOut}},
)
async def put_suppression(
    channel: Channel,
    address: Address,
    request: Request,
    principal: Admin,
    response: Response,
    body: SuppressionIn | None = None,
) -> SuppressionOut:
    """Put an address on the list (201), or leave one already there as it is (200)."""
    body = body or SuppressionIn()
    address = _checked(channel, address)
    async with runtime_of(request).db.write() as conn:
        added = await suppressions.add(
            conn,
            principal.tenant,
            channel.value,
            address,
            reason=body.reason,
            detail=body.detail,
            now=utcnow(),
        )
        found = await suppressions.get(conn, principal.tenant, channel.value, address)
    assert found is not None
    if added:
        metrics.suppressions_added.labels(channel=channel.value, reason=body.reason).inc()
        log.info("suppression.added", channel=channel.value, reason=body.reason)
        response.status_code = 201
    return SuppressionOut.of(found)


@router.delete("/{channel}/{address:anything}", status_code=204, responses=_404)
async def delete_suppression(
    channel: Channel, address: Address, request: Request, principal: Admin
) -> Response:
    """Take an address off the list: notifications to it are sent again."""
    async with runtime_of(request).db.write() as conn:
        removed = await suppressions.remove(
            conn, principal.tenant, channel.value, _checked(channel, address)
        )
    if not removed:
        raise NotFoundError(f"{channel.value} address {address!r} is not suppressed")
    log.info("suppression.removed", channel=channel.value)
    return Response(status_code=204)


def _encode(last: Suppression) -> str:
    raw = json.dumps([last.channel, last.address], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        channel, address = json.loads(raw)
        if isinstance(channel, str) and isinstance(address, str):
            return channel, address
    except (binascii.Error, ValueError, TypeError):
        pass
    raise FieldError("cursor", "is not a cursor returned by this API")
