"""The body checks' quick way (no ``\\u`` escape in the body: only its nesting is walked) answers
as the full walk does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.api.input_safety import MAX_DEPTH, body_problem, parse_json

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=40,
)


def _nested(levels: int) -> Any:
    value: Any = 1
    for i in range(levels):
        value = {"a": value} if i % 2 else [value]
    return value


@settings(max_examples=300)
@given(JSON, st.integers(min_value=0, max_value=MAX_DEPTH + 3))
def test_the_quick_way_answers_as_the_full_walk(value: Any, levels: int) -> None:
    wrapped = {"items": [value, _nested(levels)]}
    try:
        body = json.dumps(wrapped, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate: not UTF-8, refused before these checks
        return
    parsed = parse_json(body)
    assert body_problem(parsed, escaped=b"\\u" in body) == body_problem(parsed)


@pytest.mark.parametrize("levels", [MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1])
def test_nesting_is_refused_past_the_limit_either_way(levels: int) -> None:
    body = json.dumps({"data": _nested(levels)}).encode()
    parsed = parse_json(body)
    quick, full = body_problem(parsed, escaped=False), body_problem(parsed)
    assert quick == full
    assert (full is not None) == (levels >= MAX_DEPTH), full  # the body itself is level 0


def test_an_escaped_nul_is_found() -> None:
    body = b'{"items": [{"message": "a\\u0000b"}]}'
    assert body_problem(parse_json(body), escaped=b"\\u" in body) == (
        "items[0].message",
        "must not contain NUL (\\u0000)",
    )
