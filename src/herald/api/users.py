"""/api/v1/users: contact points, preferences, webhook secrets, the in-app inbox (with a
Server-Sent Events stream). The unsubscribe link email carries is in api/unsubscribe.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from herald.api import unsubscribe
from herald.api.auth import Reader, Sender
from herald.api.context import runtime_of
from herald.api.deliverable import check_contacts
from herald.api.errors import FieldError
from herald.api.limits import enforce_rate_limit
from herald.api.pages import decode_cursor, encode_cursor
from herald.api.schemas import Contacts, ErrorOut
from herald.clock import utcnow
from herald.domain.preferences import Preferences, valid_timezone
from herald.errors import NotFoundError
from herald.pipeline.planning import PlanningError, check_outbound
from herald.runtime import Runtime
from herald.store import inbox, staged_batches, user_deletion, users
from herald.store.database import Connection
from herald.store.inbox import InboxItem
from herald.store.users import Profile, UserRecord
from herald.wakeup import wait_for_event

router = APIRouter(
    prefix="/api/v1/users", tags=["users"], dependencies=[Depends(enforce_rate_limit)]
)
# The one-click unsubscribe link email carries: no API key (its token is the proof).
unsubscribe_router = unsubscribe.router

UserId = Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]
_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}
# A stream says something at least this often, so proxies keep it open.
KEEPALIVE_SECONDS = 15.0


class UserIn(Contacts):
    locale: (
        Annotated[str, Field(max_length=35, pattern=r"^[A-Za-z]{2,8}([-_][A-Za-z0-9]{1,8})*$")]
        | None
    ) = None
    timezone: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="IANA name, e.g. Europe/Lisbon; quiet hours are in it"
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None and not valid_timezone(value):
            raise ValueError("is not an IANA time zone such as Europe/Lisbon")
        return value


class UserOut(UserIn):
    model_config = ConfigDict(extra="ignore")

    id: str
    webhook_secret: str | None = Field(
        default=None,
        description="The webhook signing secret: only in the response that created it",
    )
    webhook_secrets_active: int = Field(description="2 while a rotation is in its grace period")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, user: UserRecord, secret: str | None = None) -> UserOut:
        p = user.profile
        return cls(
            id=user.id,
            email=p.email,
            phone=p.phone,
            push_tokens=p.push_tokens,
            web_push=p.web_push,
            webhook_url=p.webhook_url,
            apprise_urls=p.apprise_urls,
            locale=p.locale,
            timezone=p.timezone,
            webhook_secret=secret,
            webhook_secrets_active=len(user.signing_secrets(utcnow())),
            created_at=user.created_at,
            updated_at=user.updated_at,
        )


class SecretRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: float = Field(
        default=24 * 3600, ge=0, le=30 * 24 * 3600, description="How long the old one still signs"
    )


class SecretOut(BaseModel):
    webhook_secret: str
    old_secrets_expire_at: datetime


@router.put(
    "/{user_id}",
    response_model=UserOut,
    responses={201: {"model": UserOut, "description": "Created"}, 422: {"model": ErrorOut}},
)
async def put_user(
    user_id: UserId, payload: UserIn, request: Request, principal: Sender
) -> JSONResponse:
    """Create or replace a user's contact points, locale and time zone."""
    profile = Profile(
        email=payload.email,
        phone=payload.phone,
        locale=payload.locale,
        timezone=payload.timezone,
        push_tokens=list(payload.push_tokens),
        web_push=[s.model_dump() for s in payload.web_push],
        webhook_url=payload.webhook_url,
        apprise_urls=list(payload.apprise_urls),
    )
    check_contacts(payload, runtime_of(request).settings)  # addresses no provider takes
    try:  # a webhook URL or Web Push endpoint must not point inside the network (SSRF)
        await check_outbound(profile, runtime_of(request).intake.planner.outbound)
    except PlanningError as exc:
        raise FieldError(exc.field, exc.message) from None
    async with runtime_of(request).db.write() as conn:
        user, secret, created = await users.put(conn, principal.tenant, user_id, profile, utcnow())
    body = UserOut.of(user, secret).model_dump(mode="json")
    return JSONResponse(body, status_code=201 if created else 200)


async def _user(request: Request, tenant: str, user_id: str) -> UserRecord:
    async with runtime_of(request).db.read() as conn:
        return await _existing_user(conn, tenant, user_id)


async def _existing_user(conn: Connection, tenant: str, user_id: str) -> UserRecord:
    """The tenant's user; another tenant's (or none) is a 404."""
    user = await users.get(conn, tenant, user_id)
    if user is None:
        raise NotFoundError(f"user {user_id} not found")
    return user


@router.get("/{user_id}", response_model=UserOut, responses=_404)
async def get_user(user_id: UserId, request: Request, principal: Reader) -> UserOut:
    return UserOut.of(await _user(request, principal.tenant, user_id))


STAGED_WAITING = (
    "notifications accepted in a batch are still to be written out (it waits for a retry: "
    "see herald_staged_batch_failures_total); try again once they are"
)


@router.delete("/{user_id}", status_code=204, responses=_404)
async def delete_user(user_id: UserId, request: Request, principal: Sender) -> Response:
    """The user, its preferences, webhook secrets and inbox, in one transaction; what was
    still to be sent to it is cancelled. Sent notifications stay (see store/user_deletion)."""
    runtime = runtime_of(request)
    await runtime.intake.catch_up(principal.tenant)  # a staged batch's: cancelled as well
    async with runtime.db.write() as conn:
        if await staged_batches.pending(conn, principal.tenant):
            # One that could not be written out yet (it waits for a retry): what it holds for
            # this user could not be cancelled, and would be sent after the deletion.
            raise FieldError("user_id", STAGED_WAITING, 409)
        if not await user_deletion.delete_user(conn, principal.tenant, user_id, utcnow()):
            raise NotFoundError(f"user {user_id} not found")
    return Response(status_code=204)


@router.post("/{user_id}/webhook-secret/rotate", response_model=SecretOut, responses=_404)
async def rotate_webhook_secret(
    user_id: UserId, request: Request, principal: Sender, payload: SecretRotation | None = None
) -> SecretOut:
    """A new signing secret, shown once; the old one keeps signing during the grace period
    (webhooks carry a signature per secret), so receivers switch over without a gap."""
    grace = timedelta(seconds=(payload or SecretRotation()).grace_seconds)
    now = utcnow()
    async with runtime_of(request).db.write() as conn:
        secret = await users.rotate_secret(conn, principal.tenant, user_id, grace=grace, now=now)
    if secret is None:
        raise NotFoundError(f"user {user_id} not found")
    return SecretOut(webhook_secret=secret, old_secrets_expire_at=now + grace)


@router.put("/{user_id}/preferences", response_model=Preferences, responses=_404)
async def put_preferences(
    user_id: UserId, payload: Preferences, request: Request, principal: Sender
) -> Preferences:
    """Opt-outs per channel, per category and per category+channel, a global unsubscribe,
    and quiet hours in the user's time zone. Unsubscribing from everything also puts the
    user's email address and phone number on the tenant's suppression list (taken off again
    when it subscribes again)."""
    async with runtime_of(request).db.write() as conn:
        stored = await users.set_preferences(
            conn, principal.tenant, user_id, payload.model_dump(mode="json"), utcnow()
        )
    if not stored:
        raise NotFoundError(f"user {user_id} not found")
    return payload


@router.get("/{user_id}/preferences", response_model=Preferences, responses=_404)
async def get_preferences(user_id: UserId, request: Request, principal: Reader) -> Preferences:
    return Preferences.model_validate((await _user(request, principal.tenant, user_id)).preferences)


# -- the in-app inbox -------------------------------------------------------------------------


class InboxItemOut(BaseModel):
    id: str
    notification_id: str
    category: str | None
    title: str | None
    body: str
    data: dict[str, Any]
    status: Literal["unread", "read", "archived"]
    created_at: datetime
    read_at: datetime | None

    @classmethod
    def of(cls, item: InboxItem) -> InboxItemOut:
        return cls.model_validate(item, from_attributes=True)


class InboxPage(BaseModel):
    unread: int
    items: list[InboxItemOut]
    next_cursor: str | None


class InboxMark(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[str, Field(min_length=36, max_length=36)]] = Field(
        default_factory=list, max_length=500
    )
    all: bool = Field(default=False, description="Mark every unread item read")
    status: Literal["unread", "read", "archived"] = "read"


@router.get("/{user_id}/inbox", response_model=InboxPage, responses=_404)
async def get_inbox(
    user_id: UserId,
    request: Request,
    principal: Reader,
    status: Literal["unread", "read", "archived"] | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> InboxPage:
    """Newest first; archived items only when asked for by status."""
    before = decode_cursor(cursor) if cursor else None
    tenant = principal.tenant
    async with runtime_of(request).db.read() as conn:
        await _existing_user(conn, tenant, user_id)
        items = await inbox.page(
            conn, tenant, user_id, limit=limit + 1, before_id=before, status=status
        )
        unread = await inbox.unread_count(conn, tenant, user_id)
    page, more = items[:limit], len(items) > limit
    return InboxPage(
        unread=unread,
        items=[InboxItemOut.of(i) for i in page],
        next_cursor=encode_cursor(page[-1].id) if more else None,
    )


@router.post("/{user_id}/inbox/mark", responses=_404)
async def mark_inbox(
    user_id: UserId, payload: InboxMark, request: Request, principal: Sender
) -> dict[str, int]:
    if not payload.ids and not payload.all:
        raise FieldError("ids", "give item ids, or all: true")
    now = utcnow()
    tenant = principal.tenant
    async with runtime_of(request).db.write() as conn:
        await _existing_user(conn, tenant, user_id)
        if payload.all:
            changed = await inbox.mark_all_read(conn, tenant, user_id, now)
        else:
            changed = await inbox.mark(conn, tenant, user_id, payload.ids, payload.status, now)
        unread = await inbox.unread_count(conn, tenant, user_id)
    return {"changed": changed, "unread": unread}


@router.get(
    "/{user_id}/inbox/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **_404},
)
async def stream_inbox(user_id: UserId, request: Request, principal: Reader) -> StreamingResponse:
    """Server-Sent Events: an `item` event for each new inbox item. Reconnect with the
    `Last-Event-ID` header (browsers do) to get what arrived in between."""
    runtime = runtime_of(request)
    tenant = principal.tenant
    last = request.headers.get("last-event-id")
    async with runtime.db.read() as conn:
        await _existing_user(conn, tenant, user_id)
        if last is None:
            last = await inbox.newest_id(conn, tenant, user_id) or ""
    return StreamingResponse(
        _events(runtime, request, tenant, user_id, last),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(
    runtime: Runtime, request: Request, tenant: str, user_id: str, last: str
) -> AsyncIterator[bytes]:
    woken = runtime.inbox_wakeup.subscribe([inbox.stream_key(tenant, user_id)])
    try:
        yield b": connected\n\n"
        quiet = 0.0
        while not await request.is_disconnected():
            async with runtime.db.read() as conn:
                items = await inbox.page(
                    conn, tenant, user_id, limit=100, after_id=last, include_archived=True
                )
            for item in items:
                data = InboxItemOut.of(item).model_dump_json()
                yield f"id: {item.id}\nevent: item\ndata: {data}\n\n".encode()
                last = item.id
            if items:
                continue
            # Woken at once by an item this process added; other processes' items are
            # found by polling.
            poll = runtime.settings.inbox_poll_seconds
            await wait_for_event(woken, poll)
            quiet += poll
            if quiet >= KEEPALIVE_SECONDS:
                quiet = 0.0
                yield b": keepalive\n\n"
    finally:
        runtime.inbox_wakeup.unsubscribe(woken)
