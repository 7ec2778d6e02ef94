"""Signing in (an API key for a session) and out."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response

from herald.api.context import runtime_of
from herald.clock import utcnow
from herald.console.render import checked_form, form, page, redirect, refused, signed_in
from herald.console.security import (
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    SignInLimit,
    new_token,
    same_origin,
    same_token,
    set_cookie,
)
from herald.store import api_keys, console_sessions

router = APIRouter()
LIFETIME = timedelta(hours=8)
SIGN_IN_LIMIT = SignInLimit()


@router.get("/console")
async def home() -> Response:
    return redirect("/console/overview")


@router.get("/console/sign-in")
async def sign_in_form(request: Request) -> Response:
    return _sign_in_page(request, None, 200)


def _sign_in_page(request: Request, error: str | None, status: int) -> Response:
    token = new_token()  # the form's CSRF token, also in a cookie (there is no session yet)
    context = {"session": None, "csrf": token, "error": error}
    response = page(request, "sign_in.html", context, status)
    set_cookie(request, response, SIGN_IN_COOKIE, token, max_age=3600)
    return response


@router.post("/console/sign-in")
async def sign_in(request: Request) -> Response:
    fields = await form(request)
    expected = request.cookies.get(SIGN_IN_COOKIE)
    if not same_origin(request) or not same_token(fields.get("csrf"), expected):
        return refused(request, None)
    client = request.client.host if request.client else ""
    if not SIGN_IN_LIMIT.allow(client):
        return _sign_in_page(request, "Too many attempts: wait a minute and try again.", 429)
    now = utcnow()
    db = runtime_of(request).db
    async with db.read() as conn:
        key = await api_keys.by_hash(conn, api_keys.hash_key(fields.get("key", "").strip()))
    if key is None or not key.usable(now):
        SIGN_IN_LIMIT.failed(client)
        # One answer for unknown, revoked and expired, as the API gives.
        return _sign_in_page(request, "That key is not valid (unknown, revoked or expired).", 401)
    if not {"read", "admin"} & set(key.scopes):
        text = "That key cannot read: it needs the read or admin scope."
        return _sign_in_page(request, text, 403)
    async with db.write() as conn:
        token = await console_sessions.start(conn, key, now=now, lifetime=LIFETIME)
    response = redirect("/console/overview")
    set_cookie(request, response, SESSION_COOKIE, token, max_age=int(LIFETIME.total_seconds()))
    response.delete_cookie(SIGN_IN_COOKIE, path="/console")
    return response


@router.post("/console/sign-out")
async def sign_out(request: Request) -> Response:
    session = await signed_in(request)
    if session is not None:
        if await checked_form(request, session) is None:
            return refused(request, session)
        async with runtime_of(request).db.write() as conn:
            await console_sessions.end(conn, request.cookies.get(SESSION_COOKIE, ""))
    response = redirect("/console/sign-in")
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response
