"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from herald.observability.logging import get_logger

router = APIRouter(tags=["health"])
log = get_logger(__name__)

_CHECK_TIMEOUT = 2.0


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(description="Per dependency: ok, or what failed")


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database and the bus answer, and this process's consumers are not stalled",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency does not answer"}},
)
async def readyz(request: Request) -> JSONResponse:
    runtime = request.app.state.runtime
    checks: dict[str, str] = {}
    for name, probe in (("database", runtime.db.ping), ("bus", runtime.bus.ping)):
        try:
            await asyncio.wait_for(probe(), _CHECK_TIMEOUT)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("readyz.failed", check=name, error=checks[name])
    stalled = runtime.stall_watch.stalled()
    if stalled:
        checks["consumers"] = "; ".join(f"{group}: {why}" for group, why in sorted(stalled.items()))
        log.warning("readyz.failed", check="consumers", error=checks["consumers"])
    elif runtime.stall_watch.watching:
        checks["consumers"] = "ok"
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "unavailable", "checks": checks}
    if runtime.unavailable_channels:
        # Not a reason to take the process out of rotation: what it can send, it sends.
        body["unavailable_channels"] = runtime.unavailable_channels
    return JSONResponse(body, status_code=200 if ready else 503)
