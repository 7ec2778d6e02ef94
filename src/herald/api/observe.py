"""HTTP metrics for every request, and the ``/metrics`` endpoint Prometheus scrapes."""

from __future__ import annotations

import os
import time
from functools import lru_cache

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from herald.observability import metrics
from herald.observability.merge import merge_expositions

# A consumer process that does not answer this fast fails the scrape rather than halve it.
_CONSUMER_PROCESS_TIMEOUT = 5.0

router = APIRouter(tags=["observability"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    body, content_type = metrics.exposition()
    child = request.app.state.runtime.consumer_process_url
    if child is not None and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # `herald serve`'s consumers run in a process of their own: serve the sum of both.
        try:
            async with httpx.AsyncClient(timeout=_CONSUMER_PROCESS_TIMEOUT) as client:
                answer = await client.get(f"{child}/metrics")
                answer.raise_for_status()
        except httpx.HTTPError as exc:
            why = f"the consumer process's metrics are unavailable: {type(exc).__name__}: {exc}"
            return PlainTextResponse(why, status_code=503)
        body = merge_expositions([body.decode(), answer.text])
    return Response(body, media_type=content_type)


class RequestMetrics:
    """Pure ASGI middleware: counts and times requests by route template (``/{id}``, not the
    id itself, so the number of series stays bounded)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500  # what the client sees if the app fails before answering

        async def send_and_record(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            count, seconds = _series(scope["method"], route, code)
            count.inc()
            seconds.observe(time.perf_counter() - started)


@lru_cache(maxsize=1024)  # routes x methods x codes: bounded, and every request asks
def _series(method: str, route: str, code: int) -> tuple[Counter, Histogram]:
    """The request's counter and histogram (labels() locks and builds a key on each call)."""
    return (
        metrics.http_requests.labels(method, route, str(code)),
        metrics.http_request_seconds.labels(method, route),
    )
