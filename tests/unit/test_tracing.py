from __future__ import annotations

import pytest

from herald.observability import tracing

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_valid_caller_trace_is_continued_with_a_new_span() -> None:
    started = tracing.start(PARENT)
    assert started.startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert started != PARENT
    assert started.endswith("-01")


@pytest.mark.parametrize(
    "incoming",
    [
        None,
        "",
        "garbage",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # all-zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # all-zero span id
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # unknown version
    ],
)
def test_anything_else_starts_a_new_trace(incoming: str | None) -> None:
    started = tracing.start(incoming)
    assert tracing.trace_id({tracing.HEADER: started}) not in (None, "0" * 32)
    assert "0af7651916cd43dd8448eb211c80319c" not in started


def test_a_stage_continues_the_trace_of_what_it_consumed() -> None:
    with tracing.span("stage", PARENT) as following:
        assert tracing.trace_id({tracing.HEADER: following}) == PARENT[3:35]
        assert following != PARENT


def test_a_stage_without_context_starts_a_trace() -> None:
    with tracing.span("stage", None) as started, tracing.span("stage", "garbage") as other:
        assert tracing.trace_id({tracing.HEADER: started}) is not None
        assert tracing.trace_id(tracing.headers(started)) != tracing.trace_id(
            tracing.headers(other)
        )
