"""/api/v1/notifications: accept, read and list notifications."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse

from herald.api.errors import FieldError
from herald.api.limits import enforce_rate_limit
from herald.api.pages import decode_cursor, encode_cursor
from herald.api.schemas import (
    ErrorOut,
    NotificationCreate,
    NotificationOut,
    NotificationPage,
    TimelineOut,
    TimelineStepOut,
)
from herald.domain.models import NotificationStatus
from herald.errors import NotFoundError
from herald.observability import tracing
from herald.pipeline.intake import IdempotencyRequest, NotificationRequest
from herald.runtime import Runtime
from herald.store import deliveries, notifications
from herald.store.notifications import NotificationRecord
from herald.store.timeline import timeline

router = APIRouter(
    prefix="/api/v1/notifications",
    tags=["notifications"],
    dependencies=[Depends(enforce_rate_limit)],
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorOut, "description": "Request body too large"},
    422: {"model": ErrorOut, "description": "Invalid request; `errors` names each field"},
    429: {"model": ErrorOut, "description": "Rate limit exceeded; see Retry-After"},
    503: {"model": ErrorOut, "description": "Storage unavailable; nothing was stored"},
}
# Stripe's limit; a UUID fits with room to spare.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x20-\x7e]+$",
        description="Repeats with the same key and body return the first response.",
    ),
]


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _render(record: NotificationRecord) -> dict[str, Any]:
    return NotificationOut.of(record).model_dump(mode="json")


def request_hash(method: str, path: str, body: dict[str, Any]) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@router.post(
    "",
    status_code=202,
    response_model=NotificationOut,
    responses=_ERRORS,
    summary="Accept a notification for delivery",
)
async def create_notification(
    payload: NotificationCreate, request: Request, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    runtime = _runtime(request)
    limit = runtime.settings.max_message_bytes
    if len(payload.message.encode()) > limit:
        raise FieldError("message", f"is longer than the {limit}-byte limit")
    body = payload.model_dump(mode="json")
    idem = None
    if idempotency_key is not None:
        idem = IdempotencyRequest(
            scope="global",
            key=idempotency_key,
            request_hash=request_hash(request.method, request.url.path, body),
        )
    # Continues the caller's trace when it sent a traceparent.
    with tracing.span("notification.accept", request.headers.get(tracing.HEADER)) as traceparent:
        accepted = await runtime.intake.submit(
            NotificationRequest(
                channels=tuple(payload.channels),
                recipient=payload.recipient,
                subject=payload.subject,
                body=payload.message,
                user_id=payload.user_id,
                traceparent=traceparent,
            ),
            _render,
            idem,
        )
    headers = {"Location": f"{router.prefix}/{accepted.body['id']}"}
    if accepted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(accepted.body, status_code=accepted.status, headers=headers)


@router.get(
    "/{notification_id}",
    response_model=NotificationOut,
    responses={404: {"model": ErrorOut}},
    summary="A notification with the status of each delivery",
)
async def get_notification(notification_id: str, request: Request) -> NotificationOut:
    async with _runtime(request).db.read() as conn:
        record = await notifications.get(conn, notification_id)
        if record is None:
            raise NotFoundError(f"notification {notification_id} not found")
        history = await deliveries.attempts_of(conn, [d.id for d in record.deliveries])
    return NotificationOut.of(record, history)


@router.get(
    "/{notification_id}/timeline",
    response_model=TimelineOut,
    responses={404: {"model": ErrorOut}},
    summary="Every step of a notification, in order: why it was (not) sent",
)
async def get_timeline(notification_id: str, request: Request) -> TimelineOut:
    async with _runtime(request).db.read() as conn:
        found = await timeline(conn, notification_id)
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
    status: NotificationStatus | None = None,
    recipient: Annotated[str | None, Query(max_length=320)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> NotificationPage:
    before_id = decode_cursor(cursor) if cursor else None
    async with _runtime(request).db.read() as conn:
        records = await notifications.list_page(
            conn, limit=limit + 1, before_id=before_id, status=status, recipient=recipient
        )
    page, more = records[:limit], len(records) > limit
    return NotificationPage(
        items=[NotificationOut.of(r) for r in page],
        next_cursor=encode_cursor(page[-1].id) if more else None,
    )
