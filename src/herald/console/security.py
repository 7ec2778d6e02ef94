"""What keeps the console's pages safe to open: headers on every page, the session cookie,
CSRF checks on every form, and a limit on sign-in attempts."""

from __future__ import annotations

import secrets
import time
from collections import deque
from typing import Any

from fastapi import Request, Response
from fastapi.staticfiles import StaticFiles

SESSION_COOKIE = "herald_console"
SIGN_IN_COOKIE = "herald_console_sign_in"  # the sign-in form's CSRF token (no session yet)

# Scripts and styles only from this origin's files (none inline, so an injected one cannot
# run), fetches only to it, never framed, forms only to this origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def protect(response: Response) -> Response:
    response.headers.update(PAGE_HEADERS)
    return response


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",  # behind TLS (uvicorn honours X-Forwarded-Proto)
    )


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(given: str | None, expected: str | None) -> bool:
    return bool(given) and bool(expected) and secrets.compare_digest(str(given), str(expected))


def same_origin(request: Request) -> bool:
    """A form posted from this origin: browsers send Origin with every POST; a page on another
    site cannot make it name this one."""
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser's cross-site form (those carry Origin); the token decides
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


MAX_CLIENTS = 10_000  # addresses whose failures are remembered


class SignInLimit:
    """After ``attempts`` failed sign-ins from a client address within ``seconds``, refuse its
    sign-ins until the oldest of them is that old (in this process): keys cannot be guessed
    through the form, and a signed-in operator is never locked out by signing in."""

    def __init__(self, attempts: int = 10, seconds: float = 60.0) -> None:
        self.attempts = attempts
        self.seconds = seconds
        self._failed: dict[str, deque[float]] = {}

    def allow(self, client: str) -> bool:
        failed = self._failed.get(client)
        if not failed:
            return True
        while failed and time.monotonic() - failed[0] > self.seconds:
            failed.popleft()
        return len(failed) < self.attempts

    def failed(self, client: str) -> None:
        now = time.monotonic()
        failed = self._failed.pop(client, deque())
        failed.append(now)
        self._failed[client] = failed  # the most recent last (dicts keep insertion order)
        if len(self._failed) > MAX_CLIENTS:
            # Many addresses must not grow it without bound, nor wipe it: the stale go first,
            # then the longest quiet (never all at once, which would free a guesser too).
            stale = [c for c, f in self._failed.items() if now - f[-1] > self.seconds]
            for quiet in stale or list(self._failed)[: len(self._failed) - MAX_CLIENTS]:
                del self._failed[quiet]


class LongCachedFiles(StaticFiles):
    """The console's static files, cached for a year: their URLs carry Herald's version."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response
