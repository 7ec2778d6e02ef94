"""/api/v1/templates: versioned templates per channel and locale, and a preview."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError

from herald.api.auth import Admin, Reader
from herald.api.context import runtime_of
from herald.api.errors import FieldError
from herald.api.limits import enforce_rate_limit
from herald.api.schemas import DB_INT_MAX, ErrorOut
from herald.clock import utcnow
from herald.domain import render_pool
from herald.domain import templates as rendering
from herald.errors import NotFoundError
from herald.store import templates
from herald.store.templates import TemplateRecord

router = APIRouter(
    prefix="/api/v1/templates", tags=["templates"], dependencies=[Depends(enforce_rate_limit)]
)
TemplateName = Annotated[
    str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
]
_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}
Fields = dict[str, str]


class TemplateIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "category": "orders",
                    "channels": {
                        "email": {
                            "default": {
                                "subject": "Order {{ order.id }} shipped",
                                "text": "Hi {{ name }}, it is on its way.",
                                "html": "<p>Hi {{ name }}, it is on its way.</p>",
                            },
                            "pt": {"subject": "Pedido {{ order.id }} enviado", "text": "..."},
                        },
                        "sms": {"default": {"text": "Order {{ order.id }} shipped"}},
                    },
                }
            ]
        },
    )

    category: Annotated[str, Field(max_length=64)] | None = None
    description: Annotated[str, Field(max_length=1000)] | None = None
    channels: dict[str, dict[str, Fields]] = Field(
        min_length=1, description="channel -> locale (`default` required) -> field -> Jinja2 source"
    )


class TemplateOut(TemplateIn):
    name: str
    version: int
    created_at: datetime

    @classmethod
    def of(cls, t: TemplateRecord) -> TemplateOut:
        return cls(
            name=t.name,
            version=t.version,
            category=t.category,
            description=t.description,
            channels=t.channels,
            created_at=t.created_at,
        )


class TemplatePage(BaseModel):
    items: list[TemplateOut]
    next_cursor: str | None


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: dict[str, Any] = Field(default_factory=dict)
    locale: Annotated[str, Field(max_length=35)] | None = None
    version: int | None = Field(default=None, ge=1, le=DB_INT_MAX)
    channels: list[str] | None = Field(default=None, description="Omitted: every channel")


class RenderedOut(BaseModel):
    channel: str
    locale: str = Field(description="The locale used after fallback")
    subject: str | None
    body: str
    html: str | None


class PreviewOut(BaseModel):
    name: str
    version: int
    rendered: list[RenderedOut]


def _check(payload: TemplateIn) -> None:
    try:
        rendering.check_definition(payload.channels)
    except rendering.TemplateError as exc:
        raise FieldError(exc.field or "channels", str(exc)) from None


@router.put(
    "/{name}",
    response_model=TemplateOut,
    status_code=201,
    responses={409: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
async def put_template(
    name: TemplateName, payload: TemplateIn, request: Request, principal: Admin
) -> TemplateOut:
    """Store a new version of the template (version 1 for a new name). Notifications use the
    newest version unless they name one; what they rendered is kept with them."""
    _check(payload)
    try:
        async with runtime_of(request).db.write() as conn:
            record = await templates.add_version(
                conn,
                principal.tenant,
                name,
                category=payload.category,
                description=payload.description,
                channels=payload.channels,
                now=utcnow(),
            )
    except IntegrityError:
        raise FieldError(
            "name", "another version was stored at the same moment; retry", 409
        ) from None
    return TemplateOut.of(record)


@router.get("", response_model=TemplatePage)
async def list_templates(
    request: Request,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> TemplatePage:
    """The newest version of each template, by name."""
    async with runtime_of(request).db.read() as conn:
        found = await templates.latest_all(conn, principal.tenant, limit=limit + 1, after=cursor)
    page, more = found[:limit], len(found) > limit
    return TemplatePage(
        items=[TemplateOut.of(t) for t in page], next_cursor=page[-1].name if more else None
    )


@router.get("/{name}", response_model=TemplateOut, responses=_404)
async def get_template(
    name: TemplateName,
    request: Request,
    principal: Reader,
    version: Annotated[int | None, Query(ge=1, le=DB_INT_MAX)] = None,
) -> TemplateOut:
    async with runtime_of(request).db.read() as conn:
        record = await templates.get(conn, principal.tenant, name, version)
    if record is None:
        raise NotFoundError(f"template {name} not found")
    return TemplateOut.of(record)


@router.get("/{name}/versions", response_model=list[TemplateOut], responses=_404)
async def template_versions(
    name: TemplateName, request: Request, principal: Reader
) -> list[TemplateOut]:
    async with runtime_of(request).db.read() as conn:
        found = await templates.versions(conn, principal.tenant, name)
    if not found:
        raise NotFoundError(f"template {name} not found")
    return [TemplateOut.of(t) for t in found]


@router.delete("/{name}", status_code=204, responses=_404)
async def delete_template(name: TemplateName, request: Request, principal: Admin) -> Response:
    """Every version; notifications already accepted keep what they rendered."""
    async with runtime_of(request).db.write() as conn:
        if not await templates.delete(conn, principal.tenant, name):
            raise NotFoundError(f"template {name} not found")
    return Response(status_code=204)


async def render_channels(
    definition: dict[str, dict[str, Fields]],
    data: dict[str, Any],
    locale: str | None,
    only: list[str] | None,
    caller: str | None,
) -> list[RenderedOut]:
    """What each channel (``only`` these, or all) of a template's definition says for this
    data and locale; raises FieldError for a channel it lacks, TemplateError for the rest."""
    rendered = []
    for i, channel in enumerate(only or list(definition)):
        variants = definition.get(channel)
        if variants is None:
            raise FieldError(f"channels[{i}]", f"the template has no {channel} variant")
        chosen = rendering.pick_locale(variants, locale)
        # As at intake (see Planner._content): 429 when the caller renders too much at once.
        fields = await render_pool.render(
            variants[chosen], data, where=f"{channel}.{chosen}", caller=caller
        )
        subject, body, html = rendering.to_content(channel, fields)
        rendered.append(
            RenderedOut(channel=channel, locale=chosen, subject=subject, body=body, html=html)
        )
    return rendered


@router.post(
    "/{name}/preview",
    response_model=PreviewOut,
    responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
async def preview(
    name: TemplateName, payload: PreviewIn, request: Request, principal: Reader
) -> PreviewOut:
    """Render without sending: what each channel would say for this data and locale."""
    async with runtime_of(request).db.read() as conn:
        record = await templates.get(conn, principal.tenant, name, payload.version)
    if record is None:
        raise NotFoundError(f"template {name} not found")
    try:
        rendered = await render_channels(
            record.channels, payload.data, payload.locale, payload.channels, principal.key_id
        )
    except rendering.DataTooLargeError as exc:
        raise FieldError("data", exc.detail) from None
    except rendering.MissingVariableError as exc:
        raise FieldError(f"data.{exc.variable}", str(exc)) from None
    except rendering.TemplateError as exc:
        raise FieldError("template", str(exc)) from None
    return PreviewOut(name=record.name, version=record.version, rendered=rendered)
