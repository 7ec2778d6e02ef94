"""Build the FastAPI application around a running Runtime."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from fastapi.telemetry import TelemetryConfig

from herald import __version__
from herald.api import (
    deadletters,
    errors,
    health,
    keys,
    notifications,
    observe,
    openapi,
    providers,
    receipts,
    rules,
    suppressions,
    templates,
    users,
    webhook_secrets,
    webhook_subscriptions,
)
from herald.api.auth import Authenticator
from herald.api.input_safety import InputSafety, check_path
from herald.api.limits import BodySizeLimit
from herald.api.observe import RequestMetrics
from herald.api.quick_accept import QuickAccept
from herald.api.schemas import accept_special_use_domains
from herald.console import router as console_pages
from herald.console.render import STATIC as CONSOLE_STATIC
from herald.console.security import LongCachedFiles
from herald.runtime import Runtime

# Herald traces its own stages (observability/tracing.py). FastAPI's own OpenTelemetry support
# otherwise asks, on every request, whether a global provider was set up since the last one
# (environment look-ups included): about 4 % of a busy API's CPU, for nothing.
NO_FASTAPI_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app(
    runtime: Runtime, *, open_access: bool = False, until_first_key: bool = False
) -> FastAPI:
    """``open_access``: no API keys, every caller an admin of the default tenant (loopback
    only); with ``until_first_key``, only until an API key exists."""
    app = FastAPI(
        title="Herald",
        version=__version__,
        summary="Fault-tolerant, event-driven notifications",
        dependencies=[Depends(check_path)],
        telemetry=NO_FASTAPI_TELEMETRY,
        docs_url=None,  # served by openapi.install, from the package
        redoc_url=None,
    )
    openapi.install(app)
    app.state.runtime = runtime
    accept_special_use_domains(runtime.settings.email_special_use_domains)
    app.state.authenticator = Authenticator(
        runtime.db, open_access=open_access, until_first_key=until_first_key
    )
    app.add_middleware(QuickAccept)  # innermost: after every check, before FastAPI's layers
    app.add_middleware(InputSafety)  # inside BodySizeLimit: reads only bounded bodies
    app.add_middleware(BodySizeLimit, max_bytes=runtime.settings.max_request_bytes)
    app.add_middleware(RequestMetrics)  # outermost: sees 413s and errors too
    errors.install(app)
    app.include_router(health.router)
    app.include_router(observe.router)
    for router in (
        notifications.router,
        rules.events_router,
        users.router,
        templates.router,
        rules.router,
        deadletters.router,
        providers.router,
        keys.router,
        webhook_secrets.router,
        suppressions.router,
        webhook_subscriptions.router,
    ):
        app.include_router(router, responses=errors.API_ERRORS)
    # The link in an email: no API key, so no 401 or 403; its routes declare their own 429
    # (wrong tokens are limited per address, not requests per key).
    link_errors: dict[int | str, dict[str, Any]] = {
        s: errors.API_ERRORS[s] for s in (400, 413, 422, 503)
    }
    app.include_router(users.unsubscribe_router, responses=link_errors)
    # Providers' receipts: signed by the provider, not by a key (api/receipts).
    app.include_router(receipts.router)
    app.include_router(console_pages)
    app.mount("/console/static", LongCachedFiles(directory=CONSOLE_STATIC), name="console-static")
    return app


def create_metrics_app(runtime: Runtime) -> FastAPI:
    """What a relay or worker process serves: /metrics and the health probes."""
    app = FastAPI(
        title="Herald metrics",
        version=__version__,
        openapi_url=None,
        telemetry=NO_FASTAPI_TELEMETRY,
    )
    app.state.runtime = runtime
    app.include_router(health.router)
    app.include_router(observe.router)
    return app
