"""Input that no part of Herald can store or use, refused before any route runs (422 naming
the field), so that no route can forget to: it used to end in a 500 from the database, the
JSON encoder or the recursion limit, deep inside whichever route the value reached.

- The JSON body must parse: UTF-8, nested at most ``MAX_DEPTH`` deep, integers of at most
  ``MAX_DIGITS`` digits, no NaN or Infinity (not JSON: a PostgreSQL json column, webhook
  receivers and browsers refuse them) and no number that overflows a float to infinity.
- No string or key of the body, no query parameter and no path parameter may hold NUL
  (PostgreSQL text cannot store it; SMTP forbids it) or a lone surrogate (``"\\ud800"`` in
  JSON: not Unicode, so nothing can encode it as UTF-8).

The body and the query are checked by the middleware ``InputSafety``, before FastAPI parses
them; path parameters by the app-wide dependency ``check_path``, which runs after routing and
so can name them.
"""

from __future__ import annotations

import email.message
import json
import math
import re
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from herald.api.asgi_body import replaying
from herald.api.errors import FieldError, error_response, field_name

MAX_DEPTH = 64  # far beyond any template's data; well within Python's recursion limit
MAX_DIGITS = 4300  # Python's own limit for int(str) (sys.get_int_max_str_digits)
_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")
TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"

Problem = tuple[str, str]  # (field, message)
# Where InputSafety leaves the JSON body it parsed and found safe, for QuickAccept not to parse
# it again (the same values: json.loads with checks that only refuse).
PARSED_BODY = "herald.parsed_body"


def character_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, if it cannot."""
    return None if _BAD_CHARACTER.search(text) is None else _problem(text)


def _problem(text: str) -> str:
    if "\x00" in text:
        return "must not contain NUL (\\u0000)"
    return "must not contain a lone surrogate (\\ud800-\\udfff): it is not Unicode"


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise ValueError(f"a number has more than {MAX_DIGITS} digits")
    return int(text)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:30]} is too large")
    return value


def _constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def parse_json(body: bytes) -> Any:
    """The body as FastAPI would parse it, or ValueError saying why it is not acceptable JSON."""
    try:
        return json.loads(body, parse_int=_integer, parse_float=_finite, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(exc.msg) from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise ValueError(TOO_DEEP) from None


def body_problem(value: Any, *, escaped: bool = True) -> Problem | None:
    """The first string (or key) in a parsed body that cannot be stored, or nesting too deep.
    ``escaped``: whether the body as sent holds a ``\\u`` escape. Without one no string in it
    can hold NUL or a lone surrogate (written raw, neither is JSON in UTF-8), so only its
    nesting is checked: a batch's strings go unsearched (1.2 µs an item, 0.3 without)."""
    try:
        found = _find(value, 0) if escaped else _too_deep(value, 0)
    except RecursionError:  # (MAX_DEPTH stops it long before; a last resort)
        found = None, TOO_DEEP
    if found is None:
        return None
    path, problem = found
    if path is None:
        return "body", f"not valid JSON: {problem}"
    return field_name(("body", *reversed(path))), problem


def _find(value: Any, depth: int) -> tuple[list[str | int] | None, str] | None:
    """(the path to the problem, reversed; None for the body as a whole), and the problem.
    Paths are built only once something is found: a large batch is walked quickly."""
    if isinstance(value, str):
        return None if _BAD_CHARACTER.search(value) is None else ([], _problem(value))
    if not isinstance(value, dict | list):
        return None
    if depth >= MAX_DEPTH:
        return None, TOO_DEEP
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(key, str) and _BAD_CHARACTER.search(key) is not None:
            # The key itself is not shown: a lone surrogate cannot even be sent back.
            return [], f"has a key that {_problem(key)}"
        found = _find(item, depth + 1)
        if found is not None:
            if found[0] is not None:
                found[0].append(key)
            return found
    return None


def _too_deep(value: Any, depth: int) -> tuple[None, str] | None:
    """_find's answer about nesting alone (its strings unsearched)."""
    if not isinstance(value, dict | list):
        return None
    if depth >= MAX_DEPTH:
        return None, TOO_DEEP
    for item in value.values() if isinstance(value, dict) else value:
        if isinstance(item, dict | list) and _too_deep(item, depth + 1) is not None:
            return None, TOO_DEEP
    return None


def _is_json(scope: Scope) -> bool:
    """Whether FastAPI parses this body as JSON (its rule: application/json or */*+json)."""
    value = dict(scope["headers"]).get(b"content-type")
    if not value:
        return False  # FastAPI's strict content type: no header, no JSON
    return _is_json_type(value)


@lru_cache(maxsize=64)  # a few distinct values in practice; parsing one costs an email Message
def _is_json_type(value: bytes) -> bool:
    parsed = email.message.Message()
    parsed["content-type"] = value.decode("latin-1")
    subtype = parsed.get_content_subtype()
    return parsed.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def query_problem(scope: Scope) -> Problem | None:
    # Decoded as Starlette decodes it (invalid UTF-8 turns into U+FFFD, which is harmless).
    for name, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
        if (problem := character_problem(name)) is not None:
            return "query", f"has a parameter name that {problem}"
        if (problem := character_problem(value)) is not None:
            return name, problem
    return None


async def check_path(request: Request) -> None:
    """App-wide dependency: a path parameter (e.g. an id to look up) holding NUL."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and (problem := character_problem(value)) is not None:
            raise FieldError(name, problem)


class InputSafety:
    """Pure ASGI middleware: the checks above, on every request (inside BodySizeLimit, so
    the body it reads is bounded)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = query_problem(scope)
        if problem is None and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            body, disconnected = await _read(receive)
            if disconnected:
                return
            if body and _is_json(scope):
                try:
                    parsed = parse_json(body)
                except ValueError as exc:
                    problem = "body", f"not valid JSON: {exc}"
                else:
                    problem = body_problem(parsed, escaped=b"\\u" in body)
                    scope[PARSED_BODY] = parsed
            receive = replaying(body, receive)
        if problem is not None:
            field, message = problem
            response = error_response(422, "invalid_request", f"{field}: {message}", [problem])
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _read(receive: Receive) -> tuple[bytes, bool]:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return bytes(body), True
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body), False
