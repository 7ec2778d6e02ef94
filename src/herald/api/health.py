"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import httpx
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
    if runtime.consumer_process_url is not None:
        checks.update(await _consumer_process(runtime.consumer_process_url))
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "unavailable", "checks": checks}
    if runtime.unavailable_channels:
        # Not a reason to take the process out of rotation: what it can send, it sends.
        body["unavailable_channels"] = runtime.unavailable_channels
    return JSONResponse(body, status_code=200 if ready else 503)


async def _consumer_process(url: str) -> dict[str, str]:
    """`herald serve`'s consumer process: its consumers' check, as if they ran here, and any
    other of its checks that failed, or that it does not answer."""
    try:
        async with httpx.AsyncClient(timeout=_CHECK_TIMEOUT) as client:
            answer = await client.get(f"{url}/readyz")
        theirs: dict[str, str] = answer.json()["checks"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        why = f"the consumer process does not answer: {type(exc).__name__}: {exc}"[:300]
        log.warning("readyz.failed", check="consumers", error=why)
        return {"consumers": why}
    checks = {"consumers": theirs.get("consumers", "ok")}
    failed = [f"{n}: {w}" for n, w in sorted(theirs.items()) if n != "consumers" and w != "ok"]
    if failed:
        checks["consumer process"] = "; ".join(failed)[:300]
    return checks
