"""The console's pages: sign in and out, find notifications, read one's deliveries, attempts
and timeline. They read what the API reads, with the signed-in key's tenant."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.templating import Jinja2Templates

from herald import __version__
from herald.api.context import runtime_of
from herald.api.errors import FieldError
from herald.api.input_safety import character_problem
from herald.api.pages import decode_cursor, encode_cursor
from herald.clock import utcnow
from herald.console.security import (
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    SignInLimit,
    new_token,
    protect,
    same_origin,
    same_token,
    set_cookie,
)
from herald.console.words import describe
from herald.domain.models import NotificationStatus
from herald.store import api_keys, console_sessions, deliveries, notifications
from herald.store.console_sessions import Session
from herald.store.timeline import timeline

router = APIRouter(prefix="/console", include_in_schema=False)
TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
STATIC = Path(__file__).parent / "static"
LIFETIME = timedelta(hours=8)
PAGE_SIZE = 50
SIGN_IN_LIMIT = SignInLimit()
STATUSES = [s.value for s in NotificationStatus]


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    response = TEMPLATES.TemplateResponse(
        request, name, {"version": __version__, **context}, status_code=status
    )
    return protect(response)


def _redirect(to: str) -> Response:
    return protect(RedirectResponse(to, status_code=303))


async def _session(request: Request) -> Session | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    async with runtime_of(request).db.read() as conn:
        return await console_sessions.find(conn, token, now=utcnow())


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the last of a repeated one); refused (422, naming it) if a
    value holds what no part of Herald can store."""
    fields = dict(parse_qsl((await request.body()).decode(errors="replace"), max_num_fields=20))
    for name, value in fields.items():
        if (problem := character_problem(value)) is not None:
            raise FieldError(name, problem)
    return fields


def _message(
    request: Request, session: Session | None, title: str, message: str, status: int
) -> Response:
    context = {"session": session, "title": title, "message": message}
    return _page(request, "message.html", context, status)


def _refused(request: Request, session: Session | None) -> Response:
    message = "This form was not sent from the console's own page; reload it and try again."
    return _message(request, session, "Refused", message, 403)


@router.get("")
async def home() -> Response:
    return _redirect("/console/notifications")


@router.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    return _sign_in_page(request, None, 200)


def _sign_in_page(request: Request, error: str | None, status: int) -> Response:
    token = new_token()
    context = {"session": None, "csrf": token, "error": error}
    response = _page(request, "sign_in.html", context, status)
    set_cookie(request, response, SIGN_IN_COOKIE, token, max_age=3600)
    return response


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    form = await _form(request)
    expected = request.cookies.get(SIGN_IN_COOKIE)
    if not same_origin(request) or not same_token(form.get("csrf"), expected):
        return _refused(request, None)
    client = request.client.host if request.client else ""
    if not SIGN_IN_LIMIT.allow(client):
        return _sign_in_page(request, "Too many attempts: wait a minute and try again.", 429)
    now = utcnow()
    db = runtime_of(request).db
    async with db.read() as conn:
        key = await api_keys.by_hash(conn, api_keys.hash_key(form.get("key", "").strip()))
    if key is None or not key.usable(now):
        # One answer for unknown, revoked and expired, as the API gives.
        return _sign_in_page(request, "That key is not valid (unknown, revoked or expired).", 401)
    if not {"read", "admin"} & set(key.scopes):
        message = "That key cannot read: it needs the read or admin scope."
        return _sign_in_page(request, message, 403)
    async with db.write() as conn:
        token = await console_sessions.start(conn, key, now=now, lifetime=LIFETIME)
    response = _redirect("/console/notifications")
    set_cookie(request, response, SESSION_COOKIE, token, max_age=int(LIFETIME.total_seconds()))
    response.delete_cookie(SIGN_IN_COOKIE, path="/console")
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    session = await _session(request)
    form = await _form(request)
    if session is not None:
        if not same_origin(request) or not same_token(form.get("csrf"), session.csrf_token):
            return _refused(request, session)
        async with runtime_of(request).db.write() as conn:
            await console_sessions.end(conn, request.cookies.get(SESSION_COOKIE, ""))
    response = _redirect("/console/sign-in")
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


@router.get("/notifications")
async def notification_list(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return _redirect("/console/sign-in")
    query = request.query_params
    recipient = query.get("recipient", "").strip()[:320] or None
    status = query.get("status") or None
    errors: dict[str, str] = {}
    if status is not None and status not in STATUSES:
        errors["status"] = f"is not one of {', '.join(STATUSES)}"
        status = None
    before_id = None
    if cursor := query.get("cursor"):
        try:
            before_id = decode_cursor(cursor)
        except FieldError:
            errors["cursor"] = "is not a page of this list"
    async with runtime_of(request).db.read() as conn:
        found = await notifications.list_page(
            conn,
            session.key.tenant_id,
            limit=PAGE_SIZE + 1,
            before_id=before_id,
            status=NotificationStatus(status) if status else None,
            recipient=recipient,
        )
    page = found[:PAGE_SIZE]
    more = len(found) > PAGE_SIZE
    context = {
        "session": session,
        "items": page,
        "recipient": recipient or "",
        "status": status or "",
        "statuses": STATUSES,
        "errors": errors,
        "next_cursor": encode_cursor(page[-1].id) if more else None,
    }
    return _page(request, "notifications.html", context, 422 if errors else 200)


@router.get("/notifications/{notification_id}")
async def notification_page(notification_id: str, request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return _redirect("/console/sign-in")
    async with runtime_of(request).db.read() as conn:
        found = await timeline(conn, session.key.tenant_id, notification_id)
        history = (
            {}
            if found is None
            else await deliveries.attempts_of(conn, [d.id for d in found[0].deliveries])
        )
    if found is None:  # another tenant's as well: the API's 404
        message = f"No notification {notification_id} here."
        return _message(request, session, "Not found", message, 404)
    record, entries = found
    steps = [(entry, describe(entry)) for entry in entries]
    context = {"session": session, "n": record, "history": history, "steps": steps}
    return _page(request, "notification.html", context)
