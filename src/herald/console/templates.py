"""Templates: the tenant's templates, a template's versions and the difference between two,
and a new version edited in a form with a preview for a locale and sample data (live as one
types, with the console's one script), what is wrong shown on the field before anything is
saved: a definition that does not compile, a variable the data lacks, a render past its budget,
a subject that would break into headers."""

from __future__ import annotations

import difflib
import json
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from sqlalchemy.exc import IntegrityError

from herald.api.context import runtime_of
from herald.api.errors import FieldError
from herald.api.templates import RenderedOut, render_channels
from herald.clock import utcnow
from herald.console.render import (
    NAME_PROBLEM,
    checked_form,
    is_admin,
    message,
    notice_of,
    page,
    redirect,
    refused,
    signed_in,
    valid_name,
)
from herald.domain import templates as rendering
from herald.errors import RateLimitedError
from herald.store import templates
from herald.store.console_sessions import Session
from herald.store.templates import TemplateRecord

router = APIRouter()
LISTED = 200
NOTICES = {"saved": "Saved as a new version: the next notifications use it."}
EXAMPLE = {"email": {"default": {"subject": "Hello {{ name }}", "text": "Hi {{ name }}."}}}


@router.get("/console/templates")
async def template_list(request: Request) -> Response:
    session = await signed_in(request)
    if session is None:
        return redirect("/console/sign-in")
    async with runtime_of(request).db.read() as conn:
        found = await templates.latest_all(conn, session.key.tenant_id, limit=LISTED, after=None)
    return page(request, "templates.html", {"session": session, "templates": found})


@router.get("/console/templates/{name}")
async def template_page(name: str, request: Request) -> Response:
    session = await signed_in(request)
    if session is None:
        return redirect("/console/sign-in")
    async with runtime_of(request).db.read() as conn:
        versions = await templates.versions(conn, session.key.tenant_id, name)
    if not versions and name != "new":
        return message(request, session, "Not found", f"No template {name} here.", 404)
    wanted = request.query_params.get("version", "")
    newest = versions[-1] if versions else None
    shown = next((v for v in versions if str(v.version) == wanted), newest)
    draft = {
        "channels": json.dumps(newest.channels if newest else EXAMPLE, indent=2),
        "category": (newest.category if newest else None) or "",
        "description": (newest.description if newest else None) or "",
        "data": "{}",
        "locale": "",
    }
    context = _context(session, name, versions, shown, draft)
    context["notice"] = notice_of(request, NOTICES)
    return page(request, "template.html", context)


@router.get("/console/templates/{name}/diff")
async def template_diff(name: str, request: Request) -> Response:
    session = await signed_in(request)
    if session is None:
        return redirect("/console/sign-in")
    async with runtime_of(request).db.read() as conn:
        found = await templates.versions(conn, session.key.tenant_id, name)
    versions = {v.version: v for v in found}
    try:
        a, b = (versions[int(request.query_params.get(k, ""))] for k in ("a", "b"))
    except (KeyError, ValueError):
        return message(request, session, "Not found", "Choose two versions of this template.", 404)
    before, after = _text(a).splitlines(), _text(b).splitlines()
    names = f"version {a.version}", f"version {b.version}"
    lines = list(difflib.unified_diff(before, after, *names, lineterm=""))
    context = {"session": session, "name": name, "a": a, "b": b, "lines": lines}
    return page(request, "template_diff.html", context)


@router.post("/console/templates/{name}/draft")
async def draft(name: str, request: Request) -> Response:
    """Preview the form's version (``action`` preview) or save it as a new one (``save``,
    admin keys, only when the preview has nothing wrong). With ``fragment``, only the preview's
    part of the page (the live preview's script asks for that)."""
    session = await signed_in(request)
    if session is None:
        return redirect("/console/sign-in")
    fields = await checked_form(request, session)
    if fields is None:
        return refused(request, session)
    target = fields.get("name", "").strip() if name == "new" else name
    errors, rendered = await _check(fields, session)
    if not valid_name(target):
        errors["name"] = NAME_PROBLEM
    saving = fields.get("action") == "save"
    if saving and not is_admin(session):
        errors["save"] = "saving a version needs an admin key"
    if saving and not errors:
        try:
            async with runtime_of(request).db.write() as conn:
                await templates.add_version(
                    conn,
                    session.key.tenant_id,
                    target,
                    category=fields.get("category", "").strip() or None,
                    description=fields.get("description", "").strip() or None,
                    channels=json.loads(fields["channels"]),
                    now=utcnow(),
                )
        except IntegrityError:
            errors["save"] = "another version was stored at the same moment; save again"
        else:
            return redirect(f"/console/templates/{quote(target, safe='')}?notice=saved")
    status = 422 if errors else 200
    if fields.get("fragment") == "yes":
        fragment = {"errors": errors, "rendered": rendered}
        return page(request, "template_preview.html", fragment, status)
    async with runtime_of(request).db.read() as conn:
        versions = await templates.versions(conn, session.key.tenant_id, target)
    context = _context(session, name, versions, versions[-1] if versions else None, fields)
    context |= {"errors": errors, "rendered": rendered, "previewed": True}
    return page(request, "template.html", context, status)


async def _check(
    fields: dict[str, str], session: Session
) -> tuple[dict[str, str], list[RenderedOut]]:
    """What is wrong with the form's version, by field, and what it renders to."""
    errors: dict[str, str] = {}
    try:
        definition = json.loads(fields.get("channels", ""))
        rendering.check_definition(definition)
    except ValueError as exc:  # TemplateError is one
        where = getattr(exc, "field", "")
        errors["channels"] = str(exc) if where else f"is not JSON: {exc}"
        definition = None
    if len(fields.get("category", "")) > 64:
        errors["category"] = "must be at most 64 characters"
    if len(fields.get("description", "")) > 1000:
        errors["description"] = "must be at most 1000 characters"
    try:
        data = json.loads(fields.get("data") or "{}")
        if not isinstance(data, dict):
            raise ValueError("must be a JSON object")
    except ValueError as exc:
        errors["data"] = f"is not a JSON object: {exc}"
        data = None
    if definition is None or data is None:
        return errors, []
    locale = fields.get("locale", "").strip()[:35] or None
    try:
        rendered = await render_channels(definition, data, locale, None, session.key.id)
    except rendering.DataTooLargeError as exc:
        errors["data"] = exc.detail
    except rendering.MissingVariableError as exc:
        errors["data"] = f"{exc.field}: variable {exc.variable!r} is undefined in the sample data"
    except rendering.TemplateError as exc:
        errors["channels"] = str(exc)
    except FieldError as exc:
        errors["channels"] = exc.message
    except RateLimitedError:
        errors["preview"] = "too many renders at once for this key: try again in a moment"
    else:
        return errors, rendered
    return errors, []


def _context(
    session: Session,
    name: str,
    versions: list[TemplateRecord],
    shown: TemplateRecord | None,
    draft: dict[str, str],
) -> dict[str, Any]:
    return {
        "session": session,
        "name": None if name == "new" else name,
        "versions": versions,
        "shown": shown,
        "definition": _text(shown) if shown else "",
        "draft": draft,
        "errors": {},
        "rendered": [],
        "previewed": False,
        "can_save": is_admin(session),
    }


def _text(version: TemplateRecord) -> str:
    shown = {
        "category": version.category,
        "description": version.description,
        "channels": version.channels,
    }
    return json.dumps(shown, indent=2, ensure_ascii=False)
