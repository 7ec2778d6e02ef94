"""Build the FastAPI application around a running Runtime."""

from __future__ import annotations

from fastapi import FastAPI

from herald import __version__
from herald.api import deadletters, errors, health, notifications, observe, providers
from herald.api.limits import BodySizeLimit
from herald.api.observe import RequestMetrics
from herald.runtime import Runtime


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        title="Herald",
        version=__version__,
        summary="Fault-tolerant, event-driven notifications",
    )
    app.state.runtime = runtime
    app.add_middleware(BodySizeLimit, max_bytes=runtime.settings.max_request_bytes)
    app.add_middleware(RequestMetrics)  # outermost: sees 413s and errors too
    errors.install(app)
    app.include_router(health.router)
    app.include_router(observe.router)
    app.include_router(notifications.router)
    app.include_router(deadletters.router)
    app.include_router(providers.router)
    return app


def create_metrics_app(runtime: Runtime) -> FastAPI:
    """What a relay or worker process serves: /metrics and the health probes."""
    app = FastAPI(title="Herald metrics", version=__version__, openapi_url=None)
    app.state.runtime = runtime
    app.include_router(health.router)
    app.include_router(observe.router)
    return app
