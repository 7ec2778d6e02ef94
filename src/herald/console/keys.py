"""API keys (admin): the tenant's keys, a new one (its secret shown once), revoking one."""

from __future__ import annotations

import re
from datetime import timedelta

from fastapi import APIRouter, Request, Response

from herald.api.context import runtime_of
from herald.clock import utcnow
from herald.console.render import (
    admin_form,
    admin_session,
    message,
    notice_of,
    page,
    redirect,
)
from herald.store import api_keys
from herald.store.console_sessions import Session

router = APIRouter()
_NAME = re.compile(r"^[\x20-\x7e]{1,100}$")  # as the API's KeyIn
_DAYS = re.compile(r"[0-9]{1,4}")  # ASCII digits (str.isdigit takes "²", which int refuses)
NOTICES = {"revoked": "Revoked: it is refused everywhere within a few seconds."}


async def _keys_page(
    request: Request,
    session: Session,
    *,
    errors: dict[str, str] | None = None,
    entered: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    async with runtime_of(request).db.read() as conn:
        keys = await api_keys.list_all(conn, tenant=session.key.tenant_id)
    context = {
        "session": session,
        "keys": keys,
        "scopes": api_keys.SCOPES,
        "errors": errors or {},
        "entered": entered or {},
        "now": utcnow(),
        "notice": notice_of(request, NOTICES),
    }
    return page(request, "keys.html", context, status)


@router.get("/console/keys")
async def key_list(request: Request) -> Response:
    session = await admin_session(request, "API keys")
    if isinstance(session, Response):
        return session
    return await _keys_page(request, session)


@router.post("/console/keys")
async def create_key(request: Request) -> Response:
    answer = await admin_form(request, "API keys")
    if isinstance(answer, Response):
        return answer
    session, fields = answer
    name = fields.get("name", "").strip()
    scopes = [s for s in api_keys.SCOPES if fields.get(f"scope_{s}") == "on"]
    errors: dict[str, str] = {}
    if not _NAME.match(name):
        errors["name"] = "must be 1 to 100 printable ASCII characters"
    if not scopes:
        errors["scopes"] = "choose at least one"
    days = fields.get("expires_in_days", "").strip()
    if days and (not _DAYS.fullmatch(days) or not 1 <= int(days) <= 3650):
        errors["expires_in_days"] = "must be a whole number of days from 1 to 3650, or empty"
    if errors:
        return await _keys_page(request, session, errors=errors, entered=fields, status=422)
    now = utcnow()
    expires = now + timedelta(days=int(days)) if days else None
    async with runtime_of(request).db.write() as conn:
        record, secret = await api_keys.create(
            conn, session.key.tenant_id, name, scopes, now=now, expires_at=expires
        )
    request.app.state.authenticator.key_created()  # an API open until now closes at once
    context = {"session": session, "key": record, "secret": secret}
    return page(request, "key_created.html", context, 201)


@router.post("/console/keys/{key_id}/revoke")
async def revoke_key(key_id: str, request: Request) -> Response:
    answer = await admin_form(request, "API keys")
    if isinstance(answer, Response):
        return answer
    session, _ = answer
    async with runtime_of(request).db.write() as conn:
        found = await api_keys.revoke(conn, key_id, tenant=session.key.tenant_id, now=utcnow())
    if not found:
        return message(request, session, "Not found", f"No key {key_id} here.", 404)
    return redirect("/console/keys?notice=revoked")
