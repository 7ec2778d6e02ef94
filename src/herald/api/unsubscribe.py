"""The one-click unsubscribe link email carries in List-Unsubscribe (RFC 8058).

- GET (a person following the link, or a scanner prefetching it) shows a page with a button
  and changes nothing.
- POST with the body ``List-Unsubscribe=One-Click`` (the mail client, or that button) opts
  the user out of the link's category.

The token is the only proof (no API key): it names tenant, user and category and is signed
by Herald (domain/unsubscribe), so it acts on that one category of that one user. Wrong or
expired tokens are limited per client address: after a few, every request from there is a
429 until one comes back, so a guesser cannot learn which guess was right.
"""

from __future__ import annotations

import email.parser
import email.policy
from html import escape
from typing import Annotated, Any, Final
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from herald.api.context import runtime_of
from herald.api.errors import API_ERRORS, RETRY_AFTER, FieldError
from herald.api.failures import AddressFailures
from herald.api.schemas import ErrorOut
from herald.clock import utcnow
from herald.domain import unsubscribe
from herald.domain.preferences import CategoryPreference, Preferences
from herald.errors import NotFoundError
from herald.store import server_secrets, users
from herald.store.database import Connection
from herald.store.server_secrets import UNSUBSCRIBE_KEY
from herald.store.users import UserRecord

router = APIRouter(tags=["users"])

PATH: Final = "/api/v1/unsubscribe"
# Wrong or expired tokens, counted per client address.
FAILURES = AddressFailures("unsubscribe")
ONE_CLICK: Final = ("List-Unsubscribe", "One-Click")
MAX_FORM_BYTES: Final = 8192  # the one-click body is 26 bytes; a browser's form a few more

Token = Annotated[
    str, Query(min_length=1, max_length=unsubscribe.MAX_TOKEN_LENGTH, pattern=r"^[\x21-\x7e]+$")
]
# A link from an email must not be cached, framed, indexed, nor leak through Referer.
_PAGE_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
}
_ONE_CLICK_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        media: {
            "schema": {
                "type": "object",
                "properties": {"List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}},
                "required": ["List-Unsubscribe"],
            }
        }
        for media in ("application/x-www-form-urlencoded", "multipart/form-data")
    },
}
_HTML: Final = {"text/html": {"schema": {"type": "string"}}}
_TOO_MANY: Final = "Too many wrong or expired tokens from this address"
_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {"model": ErrorOut, "description": _TOO_MANY, "headers": RETRY_AFTER}
}
# The page's errors stay JSON, as everywhere: declared without "model", which FastAPI would
# document in the route's media type (HTML).
_JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
    }
    | ({"headers": RETRY_AFTER} if status in (429, 503) else {})
    for status, description in [
        *((s, API_ERRORS[s]["description"]) for s in (400, 413, 422, 503)),
        (429, _TOO_MANY),
    ]
}


class Unsubscribed(BaseModel):
    status: str = "unsubscribed"
    category: str


@router.get(
    PATH,
    response_class=HTMLResponse,
    responses={
        200: {"content": _HTML, "description": "A page that asks to confirm (a POST)"},
        404: {"content": _HTML, "description": "Unknown or expired link"},
        **_JSON_ERRORS,
    },
)
async def confirm_unsubscribe(request: Request, token: Token) -> HTMLResponse:
    """The page a person following the link sees: it says what the button does, and the
    button POSTs the one-click form. Nothing changes here (link scanners GET links too)."""
    await FAILURES.check(request)
    async with runtime_of(request).db.read() as conn:
        found = await _verified(request, conn, token)
    if found is None:
        return _page("This link is not valid or has expired.", status=404)
    category = escape(found[0].category)
    form = (
        f'<form method="post" action="{escape(PATH + "?token=" + quote(token, safe=""))}">'
        f'<input type="hidden" name="{ONE_CLICK[0]}" value="{ONE_CLICK[1]}">'
        f'<button type="submit">Unsubscribe from {category}</button></form>'
    )
    return _page(f"Stop receiving <strong>{category}</strong> notifications?", form)


@router.post(
    PATH,
    response_model=Unsubscribed,
    responses={
        200: {"content": _HTML},
        404: {"model": ErrorOut, "description": "Unknown or expired link"},
        **_LIMITED,
    },
    openapi_extra={"requestBody": _ONE_CLICK_BODY},
)
async def unsubscribe_one_click(request: Request, token: Token) -> Response:
    """RFC 8058 one-click: opts the link's user out of the link's category (idempotent)."""
    await FAILURES.check(request)
    if not await _is_one_click(request):
        raise FieldError("body", "must be the form List-Unsubscribe=One-Click (RFC 8058)")
    async with runtime_of(request).db.write() as conn:
        found = await _verified(request, conn, token)
        if found is None:
            raise NotFoundError("unknown or expired unsubscribe link")
        link, user = found
        prefs = Preferences.model_validate(user.preferences)
        current = prefs.categories.get(link.category, CategoryPreference())
        if current.enabled:
            disabled = current.model_copy(update={"enabled": False})
            categories = {**prefs.categories, link.category: disabled}
            updated = prefs.model_copy(update={"categories": categories})
            await users.set_preferences(
                conn, link.tenant, link.user, updated.model_dump(mode="json"), utcnow()
            )
    if "text/html" in request.headers.get("accept", ""):  # the page's button, in a browser
        done = f"You will no longer receive <strong>{escape(link.category)}</strong> notifications."
        return _page(done)
    return JSONResponse(Unsubscribed(category=link.category).model_dump())


async def _verified(
    request: Request, conn: Connection, token: str
) -> tuple[unsubscribe.Link, UserRecord] | None:
    """The token's link and user, if Herald signed it for that user (who still exists) and
    it has not expired; otherwise None, counted against the client's address."""
    link = unsubscribe.read(token)
    if link is not None and not link.expired(utcnow()):
        key = await server_secrets.get(conn, UNSUBSCRIBE_KEY)
        user = await users.get(conn, link.tenant, link.user)
        if (
            key is not None
            and user is not None
            and unsubscribe.verify(key, token, user.unsubscribe_token)
        ):
            return link, user
    await FAILURES.failed(request)
    return None


async def _is_one_click(request: Request) -> bool:
    """Whether the body is the RFC 8058 form: urlencoded, or multipart as the RFC prefers."""
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    media = content_type.partition(";")[0].strip().lower()
    if len(body) > MAX_FORM_BYTES:
        return False
    if media == "application/x-www-form-urlencoded":
        fields = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        return ONE_CLICK in fields
    if media == "multipart/form-data":
        head = f"Content-Type: {content_type}\r\n\r\n".encode("utf-8", "replace")
        parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        for part in parsed.iter_parts() if parsed.is_multipart() else ():
            name = part.get_param("name", header="content-disposition")
            value = part.get_payload(decode=True)
            if name == ONE_CLICK[0] and isinstance(value, bytes):
                return value.strip() == ONE_CLICK[1].encode()
    return False


def _page(message: str, form: str = "", *, status: int = 200) -> HTMLResponse:
    """``message`` and ``form`` are HTML whose every variable part the caller escaped."""
    html = (
        '<!doctype html><html><head><meta charset="utf-8">'
        '<meta name="robots" content="noindex"><title>Unsubscribe</title></head>'
        f"<body><p>{message}</p>{form}</body></html>"
    )
    return HTMLResponse(html, status_code=status, headers=_PAGE_HEADERS)
