"""When the database cannot be reached the API says 503, never 500, and /readyz says why."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

import httpx
import pytest

from herald.api.app import create_app
from herald.runtime import Runtime
from herald.store.database import UNAVAILABLE_ERRORS, Database
from tests.conftest import settings_for
from tests.fakes.postgres import FakePostgres

UNREACHABLE = {
    "postgres": "postgresql://postgres@127.0.0.1:1/herald",  # nothing listens on port 1
    "sqlite": "sqlite:////nonexistent-dir/herald.db",
}


@pytest.fixture(params=sorted(UNREACHABLE))
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    runtime = Runtime(settings_for(UNREACHABLE[request.param]))
    transport = httpx.ASGITransport(app=create_app(runtime, open_access=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        yield http
    await runtime.close()


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


@pytest.mark.parametrize("mode", ["recovering", "crashing"])
async def test_a_postgres_in_crash_recovery_gets_503_with_retry_after(
    mode: Literal["recovering", "crashing"],
) -> None:
    """During crash recovery PostgreSQL refuses connections (FATAL 57P03, asyncpg's
    CannotConnectNowError) after ending every session (FATAL 57P02: asyncpg's
    ConnectionDoesNotExistError); SQLAlchemy's asyncpg adapter raised both as a bare
    DBAPIError, and the API answered 500."""
    async with FakePostgres(mode) as server:
        db = Database(server.url)
        with pytest.raises(UNAVAILABLE_ERRORS):  # what the workers retry on
            async with db.write():
                pass
        await db.close()
        runtime = Runtime(settings_for(server.url))
        app = create_app(runtime, open_access=True)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            seed = {"recipient": "a@example.com", "subject": "Hi", "message": "x"}
            for response in (
                await http.post("/api/v1/notifications", json=seed),
                await http.get("/api/v1/notifications"),
            ):
                assert response.status_code == 503, response.text
                assert response.json()["code"] == "unavailable"
                assert response.headers["retry-after"] == "1"
        await runtime.close()
    assert server.connections >= 3
