"""/api/v1/webhook-subscriptions: where a tenant's status events are posted.

A subscription is a URL and the events it wants (``notification.sent``, ``delivery.bounced``,
..., or ``*``: see domain/status_events). Herald posts each event signed as the webhook
channel signs, with the tenant's webhook secrets (rotated at /api/v1/webhook-secrets), and
retries, dead-letters and orders them per notification (pipeline/stages/announce).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from herald.api.auth import Admin, Reader
from herald.api.context import runtime_of
from herald.api.errors import FieldError
from herald.api.limits import enforce_rate_limit
from herald.api.schemas import ErrorOut
from herald.channels.webhook import target
from herald.clock import utcnow
from herald.domain import status_events
from herald.errors import NotFoundError, PermanentDeliveryError
from herald.ids import uuid7
from herald.observability.logging import get_logger
from herald.store import webhook_events, webhook_subscriptions
from herald.store.dialect import lock_until_commit
from herald.store.webhook_subscriptions import MAX_PER_TENANT, Subscription

router = APIRouter(
    prefix="/api/v1/webhook-subscriptions",
    tags=["status webhooks"],
    dependencies=[Depends(enforce_rate_limit)],
)
log = get_logger(__name__)
_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}
SubscriptionId = Annotated[str, Path(min_length=1, max_length=36)]


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=2048,
        description="Where to POST the events: an absolute http(s) URL Herald may reach "
        "(public addresses only, unless HERALD_OUTBOUND_ALLOW says otherwise)",
    )
    events: list[str] = Field(
        min_length=1,
        max_length=len(status_events.EVENT_TYPES) + 1,
        description="The events to post: names such as notification.sent or "
        "delivery.bounced, or * for every one",
    )
    description: str | None = Field(default=None, max_length=200)


class SubscriptionOut(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str | None
    created_at: datetime

    @classmethod
    def of(cls, s: Subscription) -> SubscriptionOut:
        return cls(
            id=s.id,
            url=s.url,
            events=list(s.events),
            description=s.description,
            created_at=s.created_at,
        )


class SubscriptionList(BaseModel):
    items: list[SubscriptionOut]


async def _checked_url(request: Request, url: str) -> str:
    url = url.strip()
    try:
        target(url)
    except PermanentDeliveryError as exc:
        raise FieldError("url", str(exc).removeprefix("webhook: ")) from None
    refusal = await runtime_of(request).settings.outbound_policy().refusal(url)
    if refusal is not None:
        raise FieldError("url", refusal)
    return url


def _checked_events(names: list[str]) -> tuple[str, ...]:
    for i, name in enumerate(names):
        if problem := status_events.type_problem(name):
            raise FieldError(f"events[{i}]", problem)
    return tuple(dict.fromkeys(names))  # in the order given, once each


@router.post(
    "",
    status_code=201,
    response_model=SubscriptionOut,
    responses={409: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
async def create_subscription(
    body: SubscriptionIn, request: Request, principal: Admin
) -> SubscriptionOut:
    """Subscribe a URL to status events: they are posted from now on."""
    events = _checked_events(body.events)
    url = await _checked_url(request, body.url)
    rt = runtime_of(request)
    subscription = Subscription(
        id=uuid7(),
        tenant_id=principal.tenant,
        url=url,
        events=events,
        description=body.description,
        created_at=utcnow(),
    )
    async with rt.db.write() as conn:
        # Two creates at once must not both pass the cap.
        await lock_until_commit(conn, f"webhook-subscriptions:{principal.tenant}")
        existing = await webhook_subscriptions.of_tenant(conn, principal.tenant)
        if len(existing) >= MAX_PER_TENANT:
            raise FieldError(
                "url",
                f"a tenant has at most {MAX_PER_TENANT} webhook subscriptions: delete one first",
                409,
            )
        await webhook_subscriptions.add(conn, subscription)
    rt.subscriptions.forget()
    log.info("webhook_subscription.created", subscription_id=subscription.id, events=events)
    return SubscriptionOut.of(subscription)


@router.get("", response_model=SubscriptionList)
async def list_subscriptions(request: Request, principal: Reader) -> SubscriptionList:
    async with runtime_of(request).db.read() as conn:
        found = await webhook_subscriptions.of_tenant(conn, principal.tenant)
    return SubscriptionList(items=[SubscriptionOut.of(s) for s in found])


@router.get("/{subscription_id}", response_model=SubscriptionOut, responses=_404)
async def get_subscription(
    subscription_id: SubscriptionId, request: Request, principal: Reader
) -> SubscriptionOut:
    async with runtime_of(request).db.read() as conn:
        found = await webhook_subscriptions.get(conn, principal.tenant, subscription_id)
    if found is None:
        raise NotFoundError(f"webhook subscription {subscription_id!r} not found")
    return SubscriptionOut.of(found)


@router.delete("/{subscription_id}", status_code=204, responses=_404)
async def delete_subscription(
    subscription_id: SubscriptionId, request: Request, principal: Admin
) -> Response:
    """Unsubscribe: nothing more is posted to it, including its events not yet posted."""
    rt = runtime_of(request)
    async with rt.db.write() as conn:
        removed = await webhook_subscriptions.remove(conn, principal.tenant, subscription_id)
        if removed:
            await webhook_events.forget_subscription(conn, subscription_id)
    if not removed:
        raise NotFoundError(f"webhook subscription {subscription_id!r} not found")
    rt.subscriptions.forget()
    log.info("webhook_subscription.deleted", subscription_id=subscription_id)
    return Response(status_code=204)
