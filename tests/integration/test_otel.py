"""OpenTelemetry: one trace from the caller's request to the provider call, span by span."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from herald.observability import otel, tracing
from tests.pipeline_harness import URL, Pipeline

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = otel.provider_with(SimpleSpanProcessor(exporter), "herald-test")
    tracing.install(otel.OtelSpans(provider))
    try:
        yield exporter
    finally:
        tracing.install(None)
        provider.shutdown()


ROUTED = ["notification.accept", "notification.route", "delivery.attempt", "provider.send"]


@pytest.mark.parametrize(
    ("to", "chain"),
    [
        # A user's notification goes through the router (their preferences apply when sent).
        ({"user_id": "u1", "channels": ["email"]}, ROUTED),
        # Nothing left to decide: routed at intake, no span of the router's.
        ({"recipient": "a@example.com"}, [n for n in ROUTED if n != "notification.route"]),
    ],
)
async def test_a_notification_is_one_trace_from_the_caller_to_the_provider(
    pipeline: Pipeline, spans: InMemorySpanExporter, to: dict[str, object], chain: list[str]
) -> None:
    assert (await pipeline.http.put("/api/v1/users/u1", json={"email": "a@example.com"})).is_success
    response = await pipeline.http.post(
        URL,
        json={**to, "subject": "Hi", "message": "traced"},
        headers={tracing.HEADER: CALLER},
    )
    assert response.status_code == 202
    await pipeline.sink.wait_for(1)
    await pipeline.wait_until_done(response.json()["id"])

    by_name: dict[str, ReadableSpan] = {}
    for span in spans.get_finished_spans():
        assert span.context is not None
        if f"{span.context.trace_id:032x}" == CALLER_TRACE:
            by_name[span.name] = span
    assert set(chain) <= by_name.keys(), sorted(by_name)
    parent_ids = [int(CALLER[36:52], 16)] + [by_name[n].context.span_id for n in chain[:-1]]  # type: ignore[union-attr]
    for name, parent_id in zip(chain, parent_ids, strict=True):
        span = by_name[name]
        assert span.parent is not None, name
        assert span.parent.span_id == parent_id, f"{name} is not a child of the stage before"
    assert by_name["provider.send"].attributes == {"provider": "smtp"}
    assert by_name["delivery.attempt"].attributes["channel"] == "email"  # type: ignore[index]
