"""The overview: per minute what the tenant accepted, sent and failed, how long sending took,
its dead letters waiting; for the operator's tenant also the pipeline's own state (outbox
backlog, each consumer group's lag, open circuits). Read from the store and the bus, so every
process's work counts (``/metrics`` is per process). The page refreshes its figures itself."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response

from herald.api.context import runtime_of
from herald.clock import utcnow
from herald.console.render import is_admin, page, redirect, signed_in
from herald.store import circuits, deadletters, outbox, overview
from herald.store.deadletters import Filters
from herald.tenancy import DEFAULT_TENANT

router = APIRouter()
MINUTES = 15
REFRESH_SECONDS = 5
# (tenant, operator's view): when its figures were read, and them.
_FIGURES: dict[tuple[str, bool], tuple[float, dict[str, Any]]] = {}


@dataclass(frozen=True)
class Pipeline:
    """The operator's figures: shared by every tenant."""

    outbox_pending: int
    outbox_oldest_seconds: float
    lag: dict[str, int]  # consumer group: messages not yet consumed
    open_circuits: list[str]


@router.get("/console/overview")
async def overview_page(request: Request) -> Response:
    session = await signed_in(request)
    if session is None:
        return redirect("/console/sign-in")
    operator = session.key.tenant_id == DEFAULT_TENANT and is_admin(session)
    key = (session.key.tenant_id, operator)
    cached = _FIGURES.get(key)
    if cached is None or time.monotonic() - cached[0] >= REFRESH_SECONDS:
        # Read once per refresh interval and tenant, however many pages are open.
        cached = time.monotonic(), await _figures(request, session.key.tenant_id, operator)
        if len(_FIGURES) > 1000:
            _FIGURES.clear()
        _FIGURES[key] = cached
    context = {"session": session, "refresh": REFRESH_SECONDS, **cached[1]}
    fragment = request.query_params.get("fragment") == "yes"
    return page(request, "overview_figures.html" if fragment else "overview.html", context)


async def _figures(request: Request, tenant: str, operator: bool) -> dict[str, Any]:
    runtime = runtime_of(request)
    await runtime.intake.catch_up(tenant)  # staged batches: counted once written out
    now = utcnow()
    async with runtime.db.read() as conn:
        minutes = await overview.minutes(conn, tenant, now=now, count=MINUTES)
        took = await overview.latency(conn, tenant, since=now - timedelta(minutes=MINUTES))
        waiting = await deadletters.count(conn, Filters(tenant=tenant))
        pipeline = None
        if operator:
            pending, oldest = await outbox.backlog(conn, now)
            states = await circuits.list_all(conn)
            pipeline = Pipeline(pending, oldest, {}, [])
            pipeline.open_circuits.extend(
                f"{c.provider} ({c.worker})" for c in states if c.state != "closed"
            )
    if pipeline is not None:
        channels = list(runtime.intake.planner.channels)
        groups = runtime.topics.consumer_groups(channels, retry=runtime.bus.name == "kafka")
        for group, topics in groups.items():
            positions = await runtime.bus.positions(group, topics)
            pipeline.lag[group.removeprefix(runtime.topics.prefix)] = sum(
                p.lag for p in positions.values()
            )
    return {
        "minutes": minutes,
        "peak": max([1] + [max(m.accepted, m.sent, m.failed) for m in minutes]),
        "latency": took,
        "dead_letters": waiting,
        "pipeline": pipeline,
        "at": now,
    }
