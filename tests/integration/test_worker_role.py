"""A channel worker's role with its database out of reach: the circuit rows it keeps for
GET /providers are informative, so failing to write them must not stop the worker."""

from __future__ import annotations

import pytest

from herald.reliability.circuit import CircuitBreaker
from herald.roles import _save_circuit
from herald.runtime import Runtime
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
