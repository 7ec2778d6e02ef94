"""A channel worker's role with its database out of reach: the circuit rows it keeps for
GET /providers are informative, so failing to write them must not stop the worker."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from herald.reliability.circuit import CircuitBreaker
from herald.roles import _save_circuit
from herald.runtime import Runtime
from herald.store import circuits
from tests.conftest import settings_for
from tests.services import free_port


async def test_a_circuit_row_that_cannot_be_written_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens on this port: what a stopped PostgreSQL looks like to a starting worker.
    rt = Runtime(settings_for(f"postgresql+asyncpg://herald@127.0.0.1:{free_port()}/herald"))
    try:
        await _save_circuit(rt, CircuitBreaker("smtp"), "email")
    finally:
        await rt.db.close()
    assert any("circuit.save_failed" in r.getMessage() for r in caplog.records)


async def test_a_connection_broken_mid_statement_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    """What asyncpg says when PostgreSQL shut down under a connection in use (CI saw a
    starting worker die of it, and `herald serve` with it)."""

    async def broken(*args: object, **kwargs: object) -> None:
        raise sa.exc.InternalError(
            "INSERT INTO circuits ...",
            {},
            Exception("cannot switch to state 12; another operation (2) is in progress"),
        )

    monkeypatch.setattr(circuits, "save", broken)
    rt = Runtime(settings_for(database_url))
    try:
        await _save_circuit(rt, CircuitBreaker("smtp"), "email")
    finally:
        await rt.db.close()
    assert any("circuit.save_failed" in r.getMessage() for r in caplog.records)
