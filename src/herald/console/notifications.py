"""Finding notifications, and one notification's timeline, deliveries and attempts."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request, Response

from herald.api.context import runtime_of
from herald.api.errors import FieldError
from herald.api.pages import decode_cursor, encode_cursor
from herald.clock import utcnow
from herald.console.render import (
    admin_form,
    is_admin,
    message,
    notice_of,
    page,
    redirect,
    signed_in,
    utc_input,
)
from herald.console.words import describe
from herald.domain.models import Channel, NotificationStatus
from herald.store import deliveries, notifications
from herald.store.notifications import Cancelled
from herald.store.timeline import timeline

router = APIRouter()
PAGE_SIZE = 50
STATUSES = [s.value for s in NotificationStatus]
CHANNELS = [c.value for c in Channel]
NOTICES = {
    "cancelled": "Cancelled: nothing is sent when it falls due.",
    "not-cancelled": "Not cancelled: it is not scheduled any more (or is being sent).",
}
SEARCH = ("recipient", "user_id", "status", "channel", "since", "until")


@router.get("/console/notifications")
async def notification_list(request: Request) -> Response:
    session = await signed_in(request)
    if session is None:
        return redirect("/console/sign-in")
    query = request.query_params
    wanted = query.get("id", "").strip()
    if wanted:  # an id: its page (or that page's "not found")
        return redirect(f"/console/notifications/{quote(wanted, safe='')}")
    errors: dict[str, str] = {}
    chosen = {name: query.get(name, "").strip() for name in SEARCH}
    status = chosen["status"] or None
    if status is not None and status not in STATUSES:
        errors["status"] = f"is not one of {', '.join(STATUSES)}"
        status = None
    channel = chosen["channel"] or None
    if channel is not None and channel not in CHANNELS:
        errors["channel"] = f"is not one of {', '.join(CHANNELS)}"
        channel = None
    times: dict[str, datetime | None] = {}
    for name in ("since", "until"):
        try:
            times[name] = utc_input(chosen[name]) if chosen[name] else None
        except ValueError:
            errors[name] = "is not a date and time (YYYY-MM-DDTHH:MM, UTC)"
            times[name] = None
    before_id = None
    if cursor := query.get("cursor"):
        try:
            before_id = decode_cursor(cursor)
        except FieldError:
            errors["cursor"] = "is not a page of this list"
    runtime = runtime_of(request)
    await runtime.intake.catch_up(session.key.tenant_id)  # staged batches: written out first
    async with runtime.db.read() as conn:
        found = await notifications.list_page(
            conn,
            session.key.tenant_id,
            limit=PAGE_SIZE + 1,
            before_id=before_id,
            status=NotificationStatus(status) if status else None,
            recipient=chosen["recipient"][:320] or None,
            user_id=chosen["user_id"][:255] or None,
            channel=channel,
            since=times["since"],
            until=times["until"],
        )
    shown = found[:PAGE_SIZE]
    more = encode_cursor(shown[-1].id) if len(found) > PAGE_SIZE else None
    context = {
        "session": session,
        "items": shown,
        "chosen": chosen,
        "statuses": STATUSES,
        "channels": CHANNELS,
        "errors": errors,
        "next_page": None if more is None else urlencode({**chosen, "cursor": more}),
    }
    return page(request, "notifications.html", context, 422 if errors else 200)


@router.get("/console/notifications/{notification_id}")
async def notification_page(notification_id: str, request: Request) -> Response:
    session = await signed_in(request)
    if session is None:
        return redirect("/console/sign-in")
    runtime = runtime_of(request)
    await runtime.intake.catch_up(session.key.tenant_id, notification_id)
    async with runtime.db.read() as conn:
        found = await timeline(conn, session.key.tenant_id, notification_id)
        ids = [] if found is None else [d.id for d in found[0].deliveries]
        history = await deliveries.attempts_of(conn, ids)
    if found is None:  # another tenant's as well: the API's 404
        text = f"No notification {notification_id} here."
        return message(request, session, "Not found", text, 404)
    record, entries = found
    steps = [(entry, describe(entry)) for entry in entries]
    context = {
        "session": session,
        "n": record,
        "history": history,
        "steps": steps,
        "can_cancel": is_admin(session) and record.status == NotificationStatus.SCHEDULED,
        "notice": notice_of(request, NOTICES),
    }
    return page(request, "notification.html", context)


@router.post("/console/notifications/{notification_id}/cancel")
async def cancel(notification_id: str, request: Request) -> Response:
    """Cancel a scheduled notification (admin keys), as POST .../cancel does."""
    answer = await admin_form(request, "Cancelling")
    if isinstance(answer, Response):
        return answer
    session, _ = answer
    runtime = runtime_of(request)
    await runtime.intake.catch_up(session.key.tenant_id, notification_id)
    async with runtime.db.write() as conn:
        done = await notifications.cancel(
            conn, session.key.tenant_id, notification_id, now=utcnow()
        )
    if done == Cancelled.NOT_FOUND:
        text = f"No notification {notification_id} here."
        return message(request, session, "Not found", text, 404)
    notice = "cancelled" if done == Cancelled.CANCELLED else "not-cancelled"
    return redirect(f"/console/notifications/{quote(notification_id, safe='')}?notice={notice}")
