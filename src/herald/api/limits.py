"""Request limits: body size (before anything parses the body) and a rate per client."""

from __future__ import annotations

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from herald.api.asgi_body import replaying
from herald.api.auth import authenticate
from herald.api.errors import error_response
from herald.errors import RateLimitedError, UnauthorizedError
from herald.observability import metrics
from herald.reliability.ratelimit import RateLimiter


async def enforce_rate_limit(request: Request) -> None:
    """FastAPI dependency for every /api/v1 route: one token per request, from the bucket of
    the caller's API key, or of its address when it has no valid key (so inventing keys does
    not buy more guesses: unknown keys share their address's bucket)."""
    limiter = request.app.state.runtime.rate_limiter
    if limiter is None:
        return
    try:
        principal = await authenticate(request)
    except UnauthorizedError:
        await _take(limiter, _address(request))
        raise
    await _take(limiter, f"key:{principal.key_id}" if principal.key_id else _address(request))


def _address(request: Request) -> str:
    return "addr:" + (request.client.host if request.client else "unknown")


async def _take(limiter: RateLimiter, identity: str) -> None:
    decision = await limiter.acquire(identity)
    if not decision.allowed:
        metrics.api_rate_limited.inc()
        raise RateLimitedError(decision.retry_after)


class BodySizeLimit:
    """Pure ASGI middleware: buffers the body up to ``max_bytes``; beyond it answers 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await self._refuse(400, "Content-Length is not a number", scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        await self.app(scope, replaying(bytes(body), receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._refuse(
            413, f"request body is larger than {self.max_bytes} bytes", scope, receive, send
        )

    @staticmethod
    async def _refuse(
        status: int, message: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        code = "payload_too_large" if status == 413 else "bad_request"
        await error_response(status, code, message, [("body", message)])(scope, receive, send)
