"""When the database cannot be reached the API says 503, never 500, and /readyz says why."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from herald.api.app import create_app
from herald.runtime import Runtime
from tests.conftest import settings_for

UNREACHABLE = {
    "postgres": "postgresql://postgres@127.0.0.1:1/herald",  # nothing listens on port 1
    "sqlite": "sqlite:////nonexistent-dir/herald.db",
}


@pytest.fixture(params=sorted(UNREACHABLE))
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    runtime = Runtime(settings_for(UNREACHABLE[request.param]))
    transport = httpx.ASGITransport(app=create_app(runtime, open_access=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as http:
        yield http
    await runtime.close()
    # aiosqlite stops the thread of a connection that failed to open without awaiting it;
    # let that finish before pytest closes the loop the thread reports back to.
    await asyncio.sleep(0.2)


async def test_writes_and_reads_get_503(client: httpx.AsyncClient) -> None:
    seed = {"recipient": "a@example.com", "subject": "Hi", "message": "x"}
    for response in (
        await client.post("/api/v1/notifications", json=seed),
        await client.get("/api/v1/notifications"),
    ):
        assert response.status_code == 503
        assert response.json()["code"] == "unavailable"
        assert response.headers["retry-after"] == "1"


async def test_readiness_names_the_failing_check(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["database"] != "ok"
