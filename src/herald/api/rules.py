"""/api/v1/rules and /api/v1/events: what an event triggers, and triggering it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from herald.api.auth import Admin, Reader, Sender
from herald.api.context import runtime_of
from herald.api.errors import FieldError
from herald.api.idempotency_key import IdempotencyKey
from herald.api.limits import enforce_rate_limit
from herald.api.notifications import accepted_response, idempotency_of
from herald.api.rules_file import rule_record
from herald.api.schemas import (
    Category,
    ErrorOut,
    EventType,
    Identifier,
    NotificationOut,
    RuleIn,
    Timestamp,
)
from herald.domain.models import Channel, Priority
from herald.domain.rules import decide
from herald.errors import NotFoundError
from herald.observability import tracing
from herald.observability.logging import get_logger
from herald.pipeline.planning import NotificationSpec, PlanningError
from herald.store import rules, templates
from herald.store.database import Connection
from herald.store.notifications import NotificationRecord
from herald.store.rules import RuleRecord

log = get_logger(__name__)

router = APIRouter(
    prefix="/api/v1/rules", tags=["rules"], dependencies=[Depends(enforce_rate_limit)]
)
events_router = APIRouter(
    prefix="/api/v1/events", tags=["events"], dependencies=[Depends(enforce_rate_limit)]
)
RuleName = Annotated[
    str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
]


class RuleOut(RuleIn):
    name: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, r: RuleRecord) -> RuleOut:
        return cls(
            name=r.name,
            event_type=r.event_type,
            condition=r.condition,
            channels=[Channel(c) for c in r.channels],
            template=r.template,
            category=r.category,
            priority=None if r.priority is None else Priority(r.priority),
            enabled=r.enabled,
            created_at=r.created_at,
            updated_at=r.updated_at,
        )


@router.put(
    "/{name}",
    response_model=RuleOut,
    responses={201: {"model": RuleOut, "description": "Created"}, 422: {"model": ErrorOut}},
)
async def put_rule(
    name: RuleName, payload: RuleIn, request: Request, principal: Admin
) -> JSONResponse:
    """Create or replace a rule; its template must exist with a variant for each channel."""
    async with runtime_of(request).db.write() as conn:
        await check_template(conn, principal.tenant, payload)
        record, created = await rules.put(conn, principal.tenant, rule_record(name, payload))
    return JSONResponse(
        RuleOut.of(record).model_dump(mode="json"), status_code=201 if created else 200
    )


async def check_template(conn: Connection, tenant: str, rule: RuleIn) -> None:
    """Raise FieldError unless the rule's template exists with a variant for each channel."""
    template = await templates.get(conn, tenant, rule.template)
    if template is None:
        raise FieldError("template", f"no template {rule.template!r}")
    for i, channel in enumerate(rule.channels):
        if channel.value not in template.channels:
            raise FieldError(
                f"channels[{i}]", f"template {template.name!r} has no {channel} variant"
            )


@router.get("", response_model=list[RuleOut])
async def list_rules(
    request: Request,
    principal: Reader,
    event_type: Annotated[str | None, Query(max_length=100)] = None,
) -> list[RuleOut]:
    async with runtime_of(request).db.read() as conn:
        return [RuleOut.of(r) for r in await rules.list_all(conn, principal.tenant, event_type)]


@router.get("/{name}", response_model=RuleOut, responses={404: {"model": ErrorOut}})
async def get_rule(name: RuleName, request: Request, principal: Reader) -> RuleOut:
    async with runtime_of(request).db.read() as conn:
        record = await rules.get(conn, principal.tenant, name)
    if record is None:
        raise NotFoundError(f"rule {name} not found")
    return RuleOut.of(record)


@router.delete("/{name}", status_code=204, responses={404: {"model": ErrorOut}})
async def delete_rule(name: RuleName, request: Request, principal: Admin) -> Response:
    async with runtime_of(request).db.write() as conn:
        if not await rules.delete(conn, principal.tenant, name):
            raise NotFoundError(f"rule {name} not found")
    return Response(status_code=204)


# -- events ------------------------------------------------------------------------------------


class EventIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"type": "order.shipped", "user_id": "user-42", "data": {"amount": 1500}}]
        },
    )

    type: EventType
    user_id: Identifier
    data: dict[str, Any] = Field(default_factory=dict)
    category: Category | None = None
    priority: Priority = Priority.NORMAL
    locale: Annotated[str, Field(max_length=35)] | None = None
    send_at: Timestamp | None = None
    collapse_key: Identifier | None = None


class EventOut(BaseModel):
    type: str
    matched_rules: list[str]
    notification: NotificationOut | None = Field(
        description="What the matched rules made; null when no rule matched"
    )


@events_router.post(
    "",
    status_code=202,
    response_model=EventOut,
    summary="An event; its rules decide what is sent",
)
async def post_event(
    payload: EventIn,
    request: Request,
    principal: Sender,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    runtime = runtime_of(request)
    tenant = principal.tenant
    async with runtime.db.read() as conn:
        candidates = await rules.for_event(conn, tenant, payload.type)
    context = {
        "type": payload.type,
        "user_id": payload.user_id,
        "data": payload.data,
        "category": payload.category,
        "priority": payload.priority.value,
    }
    decision = decide(
        candidates,
        context,
        high=payload.priority == Priority.HIGH,
        category=payload.category,
    )
    idem = idempotency_of(idempotency_key, tenant, request, payload)
    if decision is None:
        nothing = EventOut(type=payload.type, matched_rules=[], notification=None)
        body = nothing.model_dump(mode="json")
        if idem is None:
            return JSONResponse(body, status_code=202)
        # Nothing to send, but the key is spent like any other: a repeat gets this answer
        # (even once a rule would match), the same key with another event gets 422.
        answered = await runtime.intake.submit_batch([], lambda _: body, idem)
        return accepted_response(answered.body, answered.status, answered.replayed, None)
    channel_templates = decision.channel_templates
    high, category, names = decision.high, decision.category, decision.rules

    def render(record: NotificationRecord) -> dict[str, Any]:
        out = EventOut(
            type=payload.type, matched_rules=names, notification=NotificationOut.of(record)
        )
        return out.model_dump(mode="json")

    with tracing.span("notification.accept", request.headers.get(tracing.HEADER)) as traceparent:
        spec = NotificationSpec(
            tenant_id=tenant,
            user_id=payload.user_id,
            channels=tuple(channel_templates),
            channel_templates=channel_templates,
            data=payload.data,
            locale=payload.locale,
            category=category,
            priority="high" if high else "normal",
            send_at=payload.send_at,
            collapse_key=payload.collapse_key,
            event_type=payload.type,
            traceparent=traceparent,
            caller=principal.key_id,
        )
        try:
            accepted = await runtime.intake.submit(spec, render, idem)
        except PlanningError as exc:
            raise FieldError(exc.field, exc.message) from None
    notification = accepted.body.get("notification") or {}
    location = f"/api/v1/notifications/{notification['id']}" if notification else None
    return accepted_response(accepted.body, accepted.status, accepted.replayed, location)
