"""/api/v1/notifications: accept, read and list notifications."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from herald import json_bytes
from herald.api.auth import Reader, Sender
from herald.api.context import runtime_of
from herald.api.deliverable import check_notification
from herald.api.errors import FieldError
from herald.api.idempotency_key import IdempotencyKey
from herald.api.limits import enforce_rate_limit
from herald.api.pages import decode_cursor, encode_cursor
from herald.api.schemas import (
    BatchCreate,
    BatchOut,
    ErrorOut,
    NotificationCreate,
    NotificationOut,
    NotificationPage,
    TimelineOut,
    TimelineStepOut,
    Timestamp,
    admitted_json,
    notification_json,
)
from herald.clock import utcnow
from herald.domain.models import Channel, NotificationStatus
from herald.errors import NotFoundError
from herald.observability import tracing
from herald.observability.logging import get_logger
from herald.pipeline.admitted import Admitted
from herald.pipeline.planning import NotificationSpec, PlanningError
from herald.pipeline.stages.intake import IdempotencyRequest
from herald.store import deliveries, notifications
from herald.store.notifications import Cancelled, NotificationRecord
from herald.store.timeline import timeline
from herald.store.users import Profile

router = APIRouter(
    prefix="/api/v1/notifications",
    tags=["notifications"],
    dependencies=[Depends(enforce_rate_limit)],
)
log = get_logger(__name__)
CANCEL_REFUSED = {
    Cancelled.NOT_SCHEDULED: "only a scheduled notification can be cancelled",
    Cancelled.UNDER_WAY: "it fell due and is being sent: too late to cancel",
}


def _render(record: NotificationRecord) -> dict[str, Any]:
    return notification_json(record)


def request_hash(method: str, path: str, body: dict[str, Any]) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def spec_of(
    payload: NotificationCreate, tenant: str, traceparent: str | None, caller: str | None = None
) -> NotificationSpec:
    c = payload.contacts
    if c is not None:
        contacts: Profile | None = Profile(
            email=payload.recipient or c.email,
            phone=c.phone,
            push_tokens=list(c.push_tokens),
            web_push=[s.model_dump() for s in c.web_push],
            webhook_url=c.webhook_url,
            apprise_urls=list(c.apprise_urls),
        )
    else:
        contacts = None if payload.recipient is None else Profile(email=payload.recipient)
    return NotificationSpec(
        tenant_id=tenant,
        user_id=payload.user_id,
        contacts=contacts,
        channels=None if payload.channels is None else tuple(payload.channels),
        template=payload.template,
        template_version=payload.template_version,
        data=payload.data,
        locale=payload.locale,
        subject=payload.subject,
        body=payload.message,
        category=payload.category,
        priority=payload.priority._value_,  # (what .value gives, five times quicker)
        send_at=payload.send_at,
        collapse_key=payload.collapse_key,
        traceparent=traceparent,
        caller=caller,
    )


def check_size(payload: NotificationCreate, limit: int, field: str = "message") -> None:
    message = payload.message
    # Encoded only when it might be too long: UTF-8 takes at most 4 bytes a character.
    if message is not None and len(message) * 4 > limit and len(message.encode()) > limit:
        raise FieldError(field, f"is longer than the {limit}-byte limit")


def idempotency_of(
    key: str | None, tenant: str, request: Request, payload: BaseModel
) -> IdempotencyRequest | None:
    """Keys are the tenant's own: two tenants may both send "order-1". The payload is dumped
    for its hash only when there is a key (a batch's dump cost a fortieth of its time)."""
    if key is None:
        return None
    return IdempotencyRequest(
        scope=f"tenant:{tenant}",
        key=key,
        # The path as request.url.path has it, without building the whole URL.
        request_hash=request_hash(
            request.method, request.scope["path"], payload.model_dump(mode="json")
        ),
    )


def accepted_response(
    body: dict[str, Any], status: int, replayed: bool, location: str | None
) -> JSONResponse:
    headers = {"Location": location} if location else {}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return CompactJSONResponse(body, status_code=status, headers=headers)


class CompactJSONResponse(JSONResponse):
    """The same bytes as JSONResponse (compact, UTF-8; the bodies here hold no floats), from
    json_bytes: a batch's answer describes a thousand notifications."""

    def render(self, content: Any) -> bytes:
        return json_bytes.dumps(content)


REPLAYED = {
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored answer to an earlier request with the "
        "same Idempotency-Key (nothing new was created)",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
LOCATION = {"Location": {"description": "The notification's URL", "schema": {"type": "string"}}}


async def create_notification(
    payload: NotificationCreate,
    request: Request,
    principal: Sender,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    runtime = runtime_of(request)
    check_size(payload, runtime.settings.max_message_bytes)
    check_notification(payload, runtime.settings)
    tenant = principal.tenant
    idem = idempotency_of(idempotency_key, tenant, request, payload)
    # Continues the caller's trace when it sent a traceparent.
    with tracing.span("notification.accept", request.headers.get(tracing.HEADER)) as traceparent:
        try:
            accepted = await runtime.intake.submit(
                spec_of(payload, tenant, traceparent, principal.key_id), _render, idem
            )
        except PlanningError as exc:
            raise FieldError(exc.field, exc.message) from None
    location = f"{router.prefix}/{accepted.body['id']}"
    return accepted_response(accepted.body, accepted.status, accepted.replayed, location)


router.add_api_route(
    "",
    create_notification,
    methods=["POST"],
    status_code=202,
    response_model=NotificationOut,
    summary="Accept a notification for delivery",
    responses={202: {"description": "Stored for delivery", "headers": LOCATION | REPLAYED}},
)


def batch_json(outcomes: list[Admitted | PlanningError]) -> dict[str, Any]:
    """BatchOut's JSON, built as dicts (a model per item cost a tenth of a batch's time)."""
    items = [
        {"index": i, "status": 202, "notification": admitted_json(o), "error": None}
        if isinstance(o, Admitted)
        else {
            "index": i,
            "status": 422,
            "notification": None,
            "error": {
                "code": "invalid_request",
                "message": str(o),
                "errors": [{"field": f"items[{i}].{o.field}", "message": o.message}],
            },
        }
        for i, o in enumerate(outcomes)
    ]
    accepted = sum(item["status"] == 202 for item in items)
    return {"accepted": accepted, "refused": len(items) - accepted, "items": items}


@router.post(
    "/batch",
    status_code=202,
    response_model=BatchOut,
    summary="Accept up to 1,000 notifications at once, with a result per item",
    responses={202: {"description": "Each item stored or refused", "headers": REPLAYED}},
)
async def create_batch(
    payload: BatchCreate,
    request: Request,
    principal: Sender,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    runtime = runtime_of(request)
    cap = runtime.settings.max_batch_items
    if len(payload.items) > cap:
        raise FieldError("items", f"at most {cap} items per batch")
    for i, item in enumerate(payload.items):
        check_size(item, runtime.settings.max_message_bytes, f"items[{i}].message")
        check_notification(item, runtime.settings, f"items[{i}].")
    tenant = principal.tenant
    idem = idempotency_of(idempotency_key, tenant, request, payload)

    with tracing.span("notification.accept", request.headers.get(tracing.HEADER)) as traceparent:
        specs = [spec_of(item, tenant, traceparent, principal.key_id) for item in payload.items]
        accepted = await runtime.intake.submit_batch(specs, batch_json, idem)
    return accepted_response(accepted.body, accepted.status, accepted.replayed, None)


@router.get(
    "/{notification_id}",
    response_model=NotificationOut,
    responses={404: {"model": ErrorOut}},
    summary="A notification with the status of each delivery",
)
async def get_notification(
    notification_id: str, request: Request, principal: Reader
) -> NotificationOut:
    runtime = runtime_of(request)
    for attempt in range(2):
        if attempt:  # not written out yet (a staged batch's)? Then now, and read again
            await runtime.intake.catch_up(principal.tenant, notification_id)
        async with runtime.db.read() as conn:
            record = await notifications.get(conn, principal.tenant, notification_id)
            if record is not None:
                history = await deliveries.attempts_of(conn, [d.id for d in record.deliveries])
                return NotificationOut.of(record, history)
    raise NotFoundError(f"notification {notification_id} not found")


@router.post(
    "/{notification_id}/cancel",
    response_model=NotificationOut,
    responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
    summary="Cancel a scheduled notification: nothing is sent when it falls due",
)
async def cancel_notification(
    notification_id: str, request: Request, principal: Sender
) -> NotificationOut:
    runtime = runtime_of(request)
    await runtime.intake.catch_up(principal.tenant, notification_id)  # a staged one: written
    async with runtime.db.write() as conn:
        done = await notifications.cancel(conn, principal.tenant, notification_id, now=utcnow())
        if done == Cancelled.NOT_FOUND:
            raise NotFoundError(f"notification {notification_id} not found")
        if done != Cancelled.CANCELLED:
            raise FieldError("status", CANCEL_REFUSED[done], 409)
        record = await notifications.get(conn, principal.tenant, notification_id)
    assert record is not None
    log.info("notification.cancelled", notification_id=notification_id)
    return NotificationOut.of(record)


@router.get(
    "/{notification_id}/timeline",
    response_model=TimelineOut,
    responses={404: {"model": ErrorOut}},
    summary="Every step of a notification, in order: why it was (not) sent",
)
async def get_timeline(notification_id: str, request: Request, principal: Reader) -> TimelineOut:
    runtime = runtime_of(request)
    await runtime.intake.catch_up(principal.tenant, notification_id)  # a staged one: written
    async with runtime.db.read() as conn:
        found = await timeline(conn, principal.tenant, notification_id)
    if found is None:
        raise NotFoundError(f"notification {notification_id} not found")
    record, entries = found
    return TimelineOut(
        notification_id=record.id,
        status=record.status,
        steps=[TimelineStepOut.model_validate(e, from_attributes=True) for e in entries],
    )


@router.get(
    "",
    response_model=NotificationPage,
    responses={422: {"model": ErrorOut}},
    summary="Notifications, newest first",
)
async def list_notifications(
    request: Request,
    principal: Reader,
    status: NotificationStatus | None = None,
    recipient: Annotated[str | None, Query(max_length=320)] = None,
    user_id: Annotated[str | None, Query(max_length=255)] = None,
    channel: Channel | None = None,
    since: Annotated[Timestamp | None, Query(description="Accepted at or after")] = None,
    until: Annotated[Timestamp | None, Query(description="Accepted before")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> NotificationPage:
    before_id = decode_cursor(cursor) if cursor else None
    runtime = runtime_of(request)
    await runtime.intake.catch_up(principal.tenant)  # staged batches: written out first
    async with runtime.db.read() as conn:
        records = await notifications.list_page(
            conn,
            principal.tenant,
            limit=limit + 1,
            before_id=before_id,
            status=status,
            recipient=recipient,
            user_id=user_id,
            channel=None if channel is None else channel.value,
            since=since,
            until=until,
        )
    page, more = records[:limit], len(records) > limit
    return NotificationPage(
        items=[NotificationOut.of(r) for r in page],
        next_cursor=encode_cursor(page[-1].id) if more else None,
    )
