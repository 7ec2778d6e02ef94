"""Protecting providers: a circuit breaker when one keeps failing, a rate limit always."""

from __future__ import annotations

import asyncio
import time

from tests.pipeline_harness import Pipeline, PipelineFactory


async def test_a_failing_provider_opens_its_circuit_instead_of_burning_attempts(
    start_pipeline: PipelineFactory,
) -> None:
    async with start_pipeline(
        circuit_failure_threshold=2,
        circuit_reset_seconds=0.5,
        circuit_max_reset_seconds=0.5,
        retry_max_attempts=5,
    ) as pipeline:
        pipeline.sink.stop()
        ids = [(await pipeline.send(recipient=f"u{i}@example.com"))["id"] for i in range(5)]
        providers = await _wait_for_circuit(pipeline, "open")
        assert providers[0]["provider"] == "smtp"
        assert providers[0]["consecutive_failures"] >= 2

        await asyncio.sleep(1.5)  # open, with half-open probes every 0.5 s that fail
        pipeline.sink.start()
        done = [await pipeline.wait_until_done(i, timeout=30) for i in ids]
        await _wait_for_circuit(pipeline, "closed")
        assert await pipeline.dead_letters() == []

    assert [n["status"] for n in done] == ["SENT"] * 5
    attempts = sum(n["deliveries"][0]["attempts"] for n in done)
    # Five deliveries with five attempts each could have spent 25 attempts and been
    # dead-lettered; the open circuit held them back instead.
    assert attempts < 15, attempts


async def _wait_for_circuit(pipeline: Pipeline, state: str) -> list[dict[str, object]]:
    for _ in range(1000):
        providers: list[dict[str, object]] = (await pipeline.http.get("/api/v1/providers")).json()
        if providers and providers[0]["state"] == state:
            return providers
        await asyncio.sleep(0.02)
    raise AssertionError(f"the circuit never became {state}: {providers}")


async def test_the_provider_rate_limit_spreads_sends_out(start_pipeline: PipelineFactory) -> None:
    async with start_pipeline(provider_rate_limits={"smtp": 5}) as pipeline:
        started = time.time()
        for i in range(15):
            await pipeline.send(recipient=f"u{i}@example.com")
        mails = await pipeline.sink.wait_for(15, timeout=30)
    # The bucket holds one token and gains 5 a second: the 15th send cannot happen before
    # 2.8 seconds have passed, however fast everything else is.
    assert max(m.arrived for m in mails) - started >= 2.75
