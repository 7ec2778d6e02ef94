"""What every console page shares: rendering a template with the page headers, redirects, the
signed-in session, and reading a form that must carry the session's CSRF token."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from herald import __version__
from herald.api.context import runtime_of
from herald.api.errors import FieldError
from herald.api.input_safety import character_problem
from herald.api.schemas import NAME_PATTERN
from herald.clock import utcnow
from herald.console.security import SESSION_COOKIE, protect, same_origin, same_token
from herald.store import console_sessions
from herald.store.console_sessions import Session

NAME_PROBLEM = "must be 1 to 100 letters, digits, '.', '_', ':' or '-', starting alike"
_NAME = re.compile(NAME_PATTERN)
HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")  # autoescaped: every value is text
STATIC = HERE / "static"


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    response = TEMPLATES.TemplateResponse(
        request, name, {"version": __version__, **context}, status_code=status
    )
    return protect(response)


def redirect(to: str) -> Response:
    return protect(RedirectResponse(to, status_code=303))


def message(
    request: Request, session: Session | None, title: str, text: str, status: int
) -> Response:
    context = {"session": session, "title": title, "message": text}
    return page(request, "message.html", context, status)


def refused(request: Request, session: Session | None) -> Response:
    text = "This form was not sent from the console's own page; reload it and try again."
    return message(request, session, "Refused", text, 403)


async def signed_in(request: Request) -> Session | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    async with runtime_of(request).db.read() as conn:
        return await console_sessions.find(conn, token, now=utcnow())


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the last of a repeated one); refused (422, naming it) if a
    value holds what no part of Herald can store."""
    try:
        pairs = parse_qsl((await request.body()).decode(errors="replace"), max_num_fields=50)
    except ValueError:
        raise FieldError("form", "has more than 50 fields") from None
    fields = dict(pairs)
    for name, value in fields.items():
        if (problem := character_problem(value)) is not None:
            raise FieldError(name, problem)
    return fields


async def checked_form(request: Request, session: Session) -> dict[str, str] | None:
    """The form of a signed-in page, or None if it lacks the session's CSRF token or comes
    from another origin."""
    fields = await form(request)
    if not same_origin(request) or not same_token(fields.get("csrf"), session.csrf_token):
        return None
    return fields


def is_admin(session: Session) -> bool:
    return "admin" in session.key.scopes


async def admin_session(request: Request, what: str) -> Session | Response:
    """The session of an admin key; otherwise the page to answer instead (sign in, or admin
    only: ``what`` needs an admin key, as through the API)."""
    session = await signed_in(request)
    if session is None:
        return redirect("/console/sign-in")
    if not is_admin(session):
        text = f"{what}: an admin key is needed (as through the API)."
        return message(request, session, "Admin only", text, 403)
    return session


async def admin_form(request: Request, what: str) -> tuple[Session, dict[str, str]] | Response:
    """An admin session's CSRF-checked form; otherwise the page to answer instead."""
    session = await admin_session(request, what)
    if isinstance(session, Response):
        return session
    fields = await checked_form(request, session)
    if fields is None:
        return refused(request, session)
    return session, fields


def notice_of(request: Request, notices: dict[str, str]) -> str | None:
    """The message a redirect asked for (``?notice=``): one of the page's own, never text
    from the URL."""
    return notices.get(request.query_params.get("notice", ""))


def field_errors(exc: ValidationError, whole: str) -> dict[str, str]:
    """A model's validation errors by top-level field (``whole``: for the model itself), the
    first of each, with where inside the field it is."""
    errors: dict[str, str] = {}
    for problem in exc.errors():
        field = str(problem["loc"][0]) if problem["loc"] else whole
        where = ".".join(str(part) for part in problem["loc"][1:])
        errors.setdefault(field, problem["msg"] + (f" (at {where})" if where else ""))
    return errors


def valid_name(name: str) -> bool:
    """A rule's or template's name as the API takes it in a path: NAME_PATTERN, at most 100."""
    return len(name) <= 100 and _NAME.match(name) is not None


def utc_input(value: str) -> datetime:
    """A date and time from a form (a datetime-local input: no offset, read as UTC; an
    explicit offset is honoured); ValueError if it is not one."""
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
