"""Every error leaves the API as JSON: ``{"code", "message", "errors": [{"field", "message"}]}``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from herald.api.schemas import ErrorOut
from herald.errors import (
    ForbiddenError,
    HostNotAllowedError,
    IdempotencyKeyReusedError,
    NotFoundError,
    RateLimitedError,
    UnauthorizedError,
)
from herald.observability.logging import get_logger
from herald.store.database import UNAVAILABLE_ERRORS

log = get_logger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


# What every /api/v1 route may answer besides its own results, declared once (app.py) so the
# OpenAPI schema says so; a route adds 404 where it names a resource.
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "integer"},
    }
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": 'The scheme to authenticate with: `Bearer realm="herald"`',
            "schema": {"type": "string"},
        }
    },
    429: RETRY_AFTER,
    503: RETRY_AFTER,
}
API_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": description}
    | ({"headers": _HEADERS[status]} if status in _HEADERS else {})
    for status, description in {
        400: "Content-Length is not a number",
        401: "No API key, or one that is unknown, revoked or expired",
        403: "The API key lacks the scope this route needs",
        413: "The request body is larger than HERALD_MAX_REQUEST_BYTES",
        422: "Invalid request; `errors` names each field (`body` for JSON that does not parse)",
        429: "Rate limit exceeded; see Retry-After",
        503: "Storage unavailable; nothing was stored, retry later",
    }.items()
}


class FieldError(Exception):
    """A request value the schema accepted but a rule refused (e.g. a configured size limit)."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


def error_response(
    status: int,
    code: str,
    message: str,
    errors: Sequence[tuple[str, str]] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {
        "code": code,
        "message": message,
        "errors": [{"field": f, "message": m} for f, m in errors],
    }
    return JSONResponse(body, status_code=status, headers=headers)


def field_name(loc: Sequence[Any]) -> str:
    """("body", "channels", 0) -> "channels[0]"; ("header", "Idempotency-Key") -> the header."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    if not parts or (len(loc) == 2 and loc[0] == "body" and isinstance(loc[1], int)):
        return "body"  # the body as a whole, e.g. JSON that does not parse
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            message = str(err.get("msg", "invalid"))
            if err.get("type") == "json_invalid":
                message = f"not valid JSON: {err.get('ctx', {}).get('error', message)}"
            problems.append((field_name(err.get("loc", ())), message))
        summary = "; ".join(f"{f}: {m}" for f, m in problems)
        return error_response(422, "invalid_request", summary or "invalid request", problems)

    @app.exception_handler(FieldError)
    async def _field(_: Request, exc: FieldError) -> JSONResponse:
        return error_response(exc.status, "invalid_request", str(exc), [(exc.field, exc.message)])

    @app.exception_handler(IdempotencyKeyReusedError)
    async def _reused(_: Request, exc: IdempotencyKeyReusedError) -> JSONResponse:
        message = "this Idempotency-Key was already used with a different request"
        return error_response(
            422, "idempotency_key_reused", message, [("Idempotency-Key", message)]
        )

    @app.exception_handler(RateLimitedError)
    async def _limited(_: Request, exc: RateLimitedError) -> JSONResponse:
        seconds = max(1, math.ceil(exc.retry_after))
        return error_response(
            429,
            "rate_limited",
            f"too many requests; retry in {seconds}s",
            headers={"Retry-After": str(seconds)},
        )

    @app.exception_handler(UnauthorizedError)
    async def _unauthorized(_: Request, exc: UnauthorizedError) -> JSONResponse:
        return error_response(
            401,
            "unauthorized",
            str(exc),
            [("Authorization", str(exc))],
            headers={"WWW-Authenticate": 'Bearer realm="herald"'},
        )

    @app.exception_handler(HostNotAllowedError)
    async def _host(_: Request, exc: HostNotAllowedError) -> JSONResponse:
        return error_response(403, "host_not_allowed", str(exc), [("Host", str(exc))])

    @app.exception_handler(ForbiddenError)
    async def _forbidden(_: Request, exc: ForbiddenError) -> JSONResponse:
        return error_response(403, "forbidden", str(exc), [("Authorization", str(exc))])

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return error_response(404, "not_found", str(exc) or "not found")

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return error_response(
            exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {})
        )

    async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
        # The database is down, unreachable or recovering: nothing was stored; retry.
        log.error("api.store_unavailable", error=f"{type(exc).__name__}: {exc}")
        return error_response(
            503,
            "unavailable",
            "storage is unavailable; nothing was stored, retry later",
            headers={"Retry-After": "1"},
        )

    for unavailable in UNAVAILABLE_ERRORS:
        app.add_exception_handler(unavailable, _unavailable)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("api.internal_error", error=type(exc).__name__)
        return error_response(500, "internal_error", "internal error")
