"""Build the FastAPI application around a running Runtime."""

from __future__ import annotations

from fastapi import FastAPI

from herald import __version__
from herald.api import deadletters, errors, health, notifications, providers
from herald.api.limits import BodySizeLimit
from herald.runtime import Runtime


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        title="Herald",
        version=__version__,
        summary="Fault-tolerant, event-driven notifications",
    )
    app.state.runtime = runtime
    app.add_middleware(BodySizeLimit, max_bytes=runtime.settings.max_request_bytes)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(notifications.router)
    app.include_router(deadletters.router)
    app.include_router(providers.router)
    return app
