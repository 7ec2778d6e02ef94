"""Dead letters: filter them as the API does, inspect one (payload, headers, error), replay
one or a selection after a preview of how many and which, purge one after confirming. Changing
anything needs an admin key, as in the API (whose dead-letter routes all need admin)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from fastapi import APIRouter, Request, Response

from herald.api.context import runtime_of
from herald.console.render import (
    admin_form,
    admin_session,
    message,
    notice_of,
    page,
    redirect,
    utc_input,
)
from herald.store import deadletters
from herald.store.console_sessions import Session
from herald.store.deadletters import DeadLetter, Filters

router = APIRouter()
PAGE_SIZE = 50
REPLAY_AT_MOST = 100  # a selection replays its oldest this many (the API's default limit)
CHOICES = {
    "status": ("DEAD", "REPLAYED"),
    "kind": deadletters.KINDS,
    "reason": ("permanent", "exhausted", "poison", "refused"),
}
NOTICES = {"replayed": "Replayed: it is on its way again.", "purged": "Purged."}


def _filters(values: Mapping[str, str], session: Session) -> tuple[Filters, dict[str, str]]:
    """The selection named by ``values`` (a query or a form), and what was wrong in it."""
    errors: dict[str, str] = {}
    chosen: dict[str, str | None] = {}
    for name, allowed in CHOICES.items():
        value = values.get(name, "DEAD" if name == "status" else "")
        if value and value not in allowed:
            errors[name] = f"is not one of {', '.join(allowed)}"
            value = ""
        chosen[name] = value or None
    times: dict[str, datetime | None] = {}
    for name in ("since", "until"):  # last failed in [since, until), UTC
        text = values.get(name, "").strip()
        try:
            times[name] = utc_input(text) if text else None
        except ValueError:
            errors[name] = "is not a date and time (YYYY-MM-DDTHH:MM, UTC)"
            times[name] = None
    filters = Filters(
        status=chosen["status"],
        kind=chosen["kind"],
        reason=chosen["reason"],
        channel=values.get("channel", "").strip()[:32] or None,
        provider=values.get("provider", "").strip()[:64] or None,
        error_class=values.get("error_class", "").strip()[:100] or None,
        since=times["since"],
        until=times["until"],
        tenant=session.key.tenant_id,
    )
    return filters, errors


def _selection(filters: Filters) -> dict[str, str]:
    """A selection as form fields (the preview's and the replay's hidden inputs)."""
    named = {
        "status": filters.status,
        "kind": filters.kind,
        "reason": filters.reason,
        "channel": filters.channel,
        "provider": filters.provider,
        "error_class": filters.error_class,
        "since": _local(filters.since),
        "until": _local(filters.until),
    }
    return {name: value or "" for name, value in named.items()}


@router.get("/console/dead-letters")
async def letter_list(request: Request) -> Response:
    session = await admin_session(request, "Dead letters")
    if isinstance(session, Response):
        return session
    filters, errors = _filters(request.query_params, session)
    async with runtime_of(request).db.read() as conn:
        letters = await deadletters.list_page(conn, filters, limit=PAGE_SIZE)
        matched = await deadletters.count(conn, filters)
    context = {
        "session": session,
        "letters": letters,
        "matched": matched,
        "selection": _selection(filters),
        "choices": CHOICES,
        "errors": errors,
        "notice": notice_of(request, NOTICES),
    }
    return page(request, "deadletters.html", context, 422 if errors else 200)


@router.get("/console/dead-letters/{letter_id}")
async def letter_page(letter_id: str, request: Request) -> Response:
    session = await admin_session(request, "Dead letters")
    if isinstance(session, Response):
        return session
    letter = await _letter(request, session, letter_id)
    if letter is None:
        return _not_found(request, session, letter_id)
    context = {
        "session": session,
        "letter": letter,
        "payload": _readable(letter),
        "notice": notice_of(request, NOTICES),
    }
    return page(request, "deadletter.html", context)


@router.post("/console/dead-letters/{letter_id}/replay")
async def replay_one(letter_id: str, request: Request) -> Response:
    answer = await admin_form(request, "Dead letters")
    if isinstance(answer, Response):
        return answer
    session, _ = answer
    outcome = await runtime_of(request).replayer.replay(letter_id, tenant=session.key.tenant_id)
    if outcome.detail == "not found":
        return _not_found(request, session, letter_id)
    return redirect(f"/console/dead-letters/{letter_id}?notice=replayed")


@router.post("/console/dead-letters/replay")
async def replay_selection(request: Request) -> Response:
    """A selection's preview (its filters): how many match and which would be replayed,
    with a button to replay exactly those; or that button's ``ids``: replay them (each
    checked again: the tenant's, still DEAD) and show what each replay did."""
    answer = await admin_form(request, "Dead letters")
    if isinstance(answer, Response):
        return answer
    session, fields = answer
    replayer, tenant = runtime_of(request).replayer, session.key.tenant_id
    chosen = [i for i in fields.get("ids", "").split(",") if i][:REPLAY_AT_MOST]
    if chosen:
        # Spaced out as the API's replay of a selection is.
        outcomes = [
            await replayer.replay(i, delay=n / replayer.per_second, tenant=tenant)
            for n, i in enumerate(chosen)
        ]
        async with runtime_of(request).db.read() as conn:
            found = [await deadletters.get(conn, i, tenant=tenant) for i in chosen]
        letters = [letter for letter in found if letter is not None]
        context = {"preview": False, "matched": len(chosen), "letters": letters}
        context |= {"outcomes": {o.dead_letter_id: o for o in outcomes}}
    else:
        filters, errors = _filters(fields, session)
        if errors:
            text = "The selection is not valid."
            return message(request, session, "Not replayed", text, 422)
        matched, letters, _ = await replayer.replay_matching(
            filters, limit=REPLAY_AT_MOST, dry_run=True
        )
        context = {"preview": True, "matched": matched, "letters": letters, "outcomes": {}}
    return page(request, "replay.html", {"session": session, **context})


@router.get("/console/dead-letters/{letter_id}/purge")
async def confirm_purge(letter_id: str, request: Request) -> Response:
    session = await admin_session(request, "Dead letters")
    if isinstance(session, Response):
        return session
    letter = await _letter(request, session, letter_id)
    if letter is None:
        return _not_found(request, session, letter_id)
    return page(request, "purge.html", {"session": session, "letter": letter})


@router.post("/console/dead-letters/{letter_id}/purge")
async def purge_one(letter_id: str, request: Request) -> Response:
    answer = await admin_form(request, "Dead letters")
    if isinstance(answer, Response):
        return answer
    session, _ = answer
    async with runtime_of(request).db.write() as conn:
        if await deadletters.get(conn, letter_id, tenant=session.key.tenant_id) is None:
            return _not_found(request, session, letter_id)
        await deadletters.purge_ids(conn, [letter_id])
    return redirect("/console/dead-letters?notice=purged")


async def _letter(request: Request, session: Session, letter_id: str) -> DeadLetter | None:
    async with runtime_of(request).db.read() as conn:
        return await deadletters.get(conn, letter_id, tenant=session.key.tenant_id)


def _not_found(request: Request, session: Session, letter_id: str) -> Response:
    return message(request, session, "Not found", f"No dead letter {letter_id} here.", 404)


def _local(moment: datetime | None) -> str:
    """A datetime-local input's value for a UTC time (the form shows times in UTC)."""
    return "" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%S")


def _readable(letter: DeadLetter) -> str:
    """The payload as an operator reads it: indented JSON, else its text, else its bytes."""
    try:
        text = letter.payload.decode()
    except UnicodeDecodeError:
        return repr(letter.payload)
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text
