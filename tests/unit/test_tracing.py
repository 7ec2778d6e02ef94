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


def test_propagation_keeps_the_trace_and_skips_missing_context() -> None:
    assert tracing.propagate({}) == {}
    following = tracing.propagate({tracing.HEADER: PARENT})[tracing.HEADER]
    assert tracing.trace_id({tracing.HEADER: following}) == "0af7651916cd43dd8448eb211c80319c"
