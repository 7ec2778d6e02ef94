"""Users: look one up by id, read its contact points and in-app inbox, read its preferences
and (admin) change them, with what is wrong shown on the field."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from herald.api.context import runtime_of
from herald.clock import utcnow
from herald.console.render import (
    admin_form,
    field_errors,
    is_admin,
    message,
    notice_of,
    page,
    redirect,
    signed_in,
)
from herald.domain.preferences import Preferences
from herald.store import inbox, users
from herald.store.console_sessions import Session
from herald.store.users import UserRecord

router = APIRouter()
INBOX_SHOWN = 20
NOTICES = {"saved": "Preferences saved: they apply to the next notification."}


@router.get("/console/users")
async def find_user(request: Request) -> Response:
    session = await signed_in(request)
    if session is None:
        return redirect("/console/sign-in")
    wanted = request.query_params.get("id", "").strip()
    if wanted:
        return redirect(f"/console/users/{quote(wanted, safe='')}")
    return page(request, "users.html", {"session": session})


@router.get("/console/users/{user_id}")
async def user_page(user_id: str, request: Request) -> Response:
    session = await signed_in(request)
    if session is None:
        return redirect("/console/sign-in")
    user = await _user(request, session, user_id)
    if user is None:
        return message(request, session, "Not found", f"No user {user_id} here.", 404)
    preferences = Preferences.model_validate(user.preferences)
    fields = _fields_of(preferences, _channels(request))
    notice = notice_of(request, NOTICES)
    return await _render(request, session, user, fields, {}, notice, 200)


@router.post("/console/users/{user_id}/preferences")
async def save_preferences(user_id: str, request: Request) -> Response:
    answer = await admin_form(request, "Changing preferences")
    if isinstance(answer, Response):
        return answer
    session, fields = answer
    user = await _user(request, session, user_id)
    if user is None:
        return message(request, session, "Not found", f"No user {user_id} here.", 404)
    preferences, errors = _preferences_from(fields, _channels(request))
    if preferences is None:
        return await _render(request, session, user, fields, errors, None, 422)
    async with runtime_of(request).db.write() as conn:
        await users.set_preferences(
            conn, session.key.tenant_id, user_id, preferences.model_dump(mode="json"), utcnow()
        )
    return redirect(f"/console/users/{quote(user_id, safe='')}?notice=saved")


async def _user(request: Request, session: Session, user_id: str) -> UserRecord | None:
    async with runtime_of(request).db.read() as conn:
        return await users.get(conn, session.key.tenant_id, user_id)


async def _render(
    request: Request,
    session: Session,
    user: UserRecord,
    fields: dict[str, str],
    errors: dict[str, str],
    notice: str | None,
    status: int,
) -> Response:
    async with runtime_of(request).db.read() as conn:
        items = await inbox.page(
            conn, session.key.tenant_id, user.id, limit=INBOX_SHOWN, include_archived=True
        )
        unread = await inbox.unread_count(conn, session.key.tenant_id, user.id)
    context = {
        "session": session,
        "user": user,
        "channels": _channels(request),
        "fields": fields,
        "errors": errors,
        "items": items,
        "unread": unread,
        "notice": notice,
        "can_edit": is_admin(session),
    }
    return page(request, "user.html", context, status)


def _channels(request: Request) -> list[str]:
    return list(runtime_of(request).intake.planner.channels)


def _fields_of(preferences: Preferences, channels: list[str]) -> dict[str, str]:
    """Stored preferences as the form's fields, as a browser posts them (a checked box "on",
    an unchecked one absent): a channel's box is checked unless the user opted out of it."""
    fields = {"unsubscribed": "on"} if preferences.unsubscribed else {}
    for channel in channels:
        if preferences.channels.get(channel, True):
            fields[f"channel_{channel}"] = "on"
    if preferences.quiet_hours is not None:
        fields["quiet_start"] = preferences.quiet_hours.start.strftime("%H:%M")
        fields["quiet_end"] = preferences.quiet_hours.end.strftime("%H:%M")
    categories = preferences.model_dump(mode="json")["categories"]
    fields["categories"] = json.dumps(categories, indent=2) if categories else ""
    return fields


def _preferences_from(
    fields: dict[str, str], channels: list[str]
) -> tuple[Preferences | None, dict[str, str]]:
    """The form's preferences, or None and what is wrong, by field."""
    errors: dict[str, str] = {}
    value: dict[str, Any] = {
        "unsubscribed": fields.get("unsubscribed") == "on",
        # Opt-out: only the channels unchecked are stored.
        "channels": {c: False for c in channels if fields.get(f"channel_{c}") != "on"},
    }
    start, end = fields.get("quiet_start", "").strip(), fields.get("quiet_end", "").strip()
    if start or end:
        if not (start and end):
            errors["quiet_hours"] = "need both a start and an end"
        value["quiet_hours"] = {"start": start, "end": end}
    text = fields.get("categories", "").strip()
    try:
        value["categories"] = json.loads(text) if text else {}
    except ValueError as exc:
        errors["categories"] = f"is not JSON: {exc}"
    if errors:
        return None, errors
    try:
        return Preferences.model_validate(value), {}
    except ValidationError as exc:
        return None, field_errors(exc, "preferences")
