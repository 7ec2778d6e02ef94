"""A quicker way into the busiest endpoints, ``POST /api/v1/notifications`` and ``.../batch``.

Between Herald's own middleware (metrics, body size, input safety) and the endpoint, FastAPI
and Starlette add their layers for every request: exception handling, the router trying each
route's pattern, the request/response wrapping, and the route's arguments worked out anew
from its declared dependencies (the app's path check, the rate limit, the key's scope with its
OpenAPI security declaration, the JSON body, the Idempotency-Key header). For a single
notification that was more than the endpoint's own work (a fifth of a busy API's CPU); a batch
also had its body parsed a second time.

``QuickAccept``, the innermost middleware, takes a request to these paths that is in order (a JSON
body that validates, no Idempotency-Key or a valid one, a key with the ``send`` scope), takes
the rate limit's token as the dependency would and calls the same endpoint with the same
arguments; an error the endpoint raises is answered by the app's handler for it, as the
framework would. Any other request goes on to FastAPI, which answers it exactly as before;
nothing has happened to it by then (no token taken, nothing stored, the body only read), so it
is handled once. The route's OpenAPI description still comes from the endpoint's signature.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette._utils import get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from herald.api import idempotency_key
from herald.api.asgi_body import replaying
from herald.api.auth import authenticate
from herald.api.input_safety import PARSED_BODY
from herald.api.limits import enforce_rate_limit
from herald.api.schemas import BatchCreate, NotificationCreate
from herald.errors import HeraldError

# Each path taken, with the model of its JSON body.
BODIES: dict[str, type[NotificationCreate] | type[BatchCreate]] = {
    "/api/v1/notifications": NotificationCreate,
    "/api/v1/notifications/batch": BatchCreate,
}

ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


class QuickAccept:
    """Pure ASGI middleware, added first (innermost): see the module docstring. It learns each
    path's route (the endpoint, and the route the metrics name) from the first request to it,
    which FastAPI routes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes: dict[str, APIRoute] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = get_route_path(scope)
        if path not in BODIES:
            await self.app(scope, receive, send)
            return
        route = self._routes.get(path)
        request = Request(scope, receive)
        arguments = None if route is None else await _arguments(request, BODIES[path])
        if route is None or arguments is None:
            body = await request.body()
            await self.app(scope, replaying(body, receive), send)
            found = scope.get("route")
            if route is None and isinstance(found, APIRoute) and found.path == path:
                self._routes[path] = found  # the router put it in the scope
            return
        scope.update(route=route, endpoint=route.endpoint)  # as the router does
        try:
            await enforce_rate_limit(request)
            response: Response = await route.endpoint(**arguments)
        except Exception as exc:
            handler = _handler_for(scope["app"].exception_handlers, exc)
            if handler is None:
                raise  # as before: to the server-error handler, outside all middleware
            response = await handler(request, exc)
        await response(scope, receive, send)


async def _arguments(
    request: Request, model: type[NotificationCreate] | type[BatchCreate]
) -> dict[str, Any] | None:
    """The endpoint's arguments, or None for a request FastAPI should see to."""
    content_type = request.headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != "application/json":
        return None
    key = request.headers.get("idempotency-key")
    if key is not None and not idempotency_key.is_valid(key):
        return None
    try:
        # As FastAPI does: JSON decoded by the json module, the model validated in Python mode.
        # InputSafety (outside) has parsed it already, as the json module does.
        scope = request.scope
        body = scope[PARSED_BODY] if PARSED_BODY in scope else json.loads(await request.body())
        payload = model.model_validate(body)
    except (ValueError, ValidationError):  # bad JSON or UTF-8 (ValueErrors), or a bad field
        return None
    try:
        principal = await authenticate(request)
    except HeraldError:
        return None
    if not principal.allows("send"):
        return None
    return {"payload": payload, "request": request, "principal": principal, "idempotency_key": key}


def _handler_for(handlers: dict[Any, Any], exc: Exception) -> ExceptionHandler | None:
    """The app's handler for ``exc`` as Starlette's exception middleware finds it: by the
    exception's classes, nearest first. Not the one for every ``Exception``: that one runs in
    the server-error middleware, outside all others, which also re-raises."""
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            handler: ExceptionHandler = handlers[cls]
            return handler
    return None
