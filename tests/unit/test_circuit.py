from __future__ import annotations

import asyncio

from herald.reliability.circuit import CircuitBreaker, CircuitState, CircuitTable


async def test_consecutive_failures_open_it_and_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker("smtp", failure_threshold=3, reset_timeout=10)
    breaker.failed()
    breaker.failed()
    breaker.succeeded()
    breaker.failed()
    breaker.failed()
    assert breaker.state == CircuitState.CLOSED
    breaker.failed()
    assert breaker.state == CircuitState.OPEN


async def test_an_open_circuit_holds_callers_until_the_pause_ends() -> None:
    breaker = CircuitBreaker("smtp", failure_threshold=1, reset_timeout=1.0)
    breaker.failed()
    waiting = asyncio.create_task(breaker.ready())
    await asyncio.sleep(0.05)
    assert not waiting.done()  # held, not refused
    await asyncio.wait_for(waiting, 5)
    assert breaker.state == CircuitState.HALF_OPEN


async def test_half_open_lets_one_probe_through_and_closes_on_its_success() -> None:
    breaker = CircuitBreaker("smtp", failure_threshold=1, reset_timeout=0.05)
    breaker.failed()
    probe = asyncio.create_task(breaker.ready())
    await asyncio.wait_for(probe, 5)
    second = asyncio.create_task(breaker.ready())
    await asyncio.sleep(0.1)
    assert not second.done()  # only one probe at a time
    breaker.succeeded()
    await asyncio.wait_for(second, 5)
    assert breaker.state == CircuitState.CLOSED


async def test_a_failed_probe_reopens_with_a_longer_pause() -> None:
    changes: list[CircuitState] = []
    breaker = CircuitBreaker(
        "smtp",
        failure_threshold=1,
        reset_timeout=0.05,
        max_reset_timeout=0.15,
        on_change=lambda b: changes.append(b.state),
    )
    breaker.failed()
    await asyncio.wait_for(breaker.ready(), 5)
    breaker.failed()
    assert breaker.state == CircuitState.OPEN
    assert breaker._reset_timeout == 0.1  # doubled
    await asyncio.wait_for(breaker.ready(), 5)
    breaker.failed()
    assert breaker._reset_timeout == 0.15  # capped
    assert changes == [
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.OPEN,
    ]


async def test_a_probe_that_never_called_can_be_released_but_only_by_itself() -> None:
    breaker = CircuitBreaker("smtp", failure_threshold=1, reset_timeout=0.05)
    breaker.failed()
    first = await asyncio.wait_for(breaker.ready(), 5)
    assert first is not None
    breaker.release_probe(first)  # it had nothing to send
    second = await asyncio.wait_for(breaker.ready(), 5)
    assert second is not None
    assert second != first
    breaker.release_probe(first)  # stale: the second probe keeps its turn
    assert not breaker.usable()
    breaker.succeeded()
    assert await breaker.ready() is None  # closed: nobody is a probe


async def test_probe_now_lets_the_next_caller_probe_before_the_pause_ends() -> None:
    breaker = CircuitBreaker("smtp", failure_threshold=1, reset_timeout=3600)
    breaker.failed()
    assert not breaker.usable()
    breaker.probe_now()  # the provider greets again
    assert breaker.usable()
    assert await asyncio.wait_for(breaker.ready(), 1) == 1  # this caller is the probe
    assert breaker.state == CircuitState.HALF_OPEN


def test_a_circuit_table_keeps_at_most_its_capacity_forgetting_the_least_recent() -> None:
    table = CircuitTable(CircuitBreaker, capacity=2)
    first = table.get("acme example.com")
    first.failed()
    table.get("globex example.com")
    assert table.get("acme example.com") is first  # used again: now the most recent
    table.get("initech example.com")
    assert len(table) == 2
    assert table.get("acme example.com") is first
    assert table.get("globex example.com").consecutive_failures == 0  # forgotten, made anew
