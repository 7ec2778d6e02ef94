"""herald.json_bytes writes the bytes pydantic's encoder writes, for every kind of value Herald
encodes with it (202 bodies, staged batches, messages, JSON columns), whether orjson takes the
value or leaves it to pydantic."""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime, timedelta, timezone

import pydantic_core
import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald import json_bytes
from herald.domain.messages import Content
from herald.domain.models import DeliveryStatus, NotificationStatus


class Colour(enum.Enum):  # not a str: orjson and pydantic write its value
    RED = "red"


times = st.datetimes(
    min_value=datetime(1900, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5, minutes=-30))]) | st.none(),
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)  # beyond 64 bits: orjson refuses, pydantic writes them
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()  # any code point, lone surrogates and control characters included
    | times
    | st.dates(min_value=date(1900, 1, 1))
    | st.sampled_from([*NotificationStatus, *DeliveryStatus, Colour.RED])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        | st.builds(
            Content,
            subject=st.none() | st.text(max_size=8),
            body=st.text(max_size=8),
            data=st.dictionaries(st.text(max_size=8), inner, max_size=3),
        )
    ),
    max_leaves=12,
)


def _encoded(encode: object, value: object) -> bytes | str:
    try:
        return encode(value)  # type: ignore[operator, no-any-return]
    except Exception as exc:  # refused alike (a lone surrogate): the same error type
        return type(exc).__name__


@given(values)
def test_the_same_bytes_as_pydantic(value: object) -> None:
    assert _encoded(json_bytes.dumps, value) == _encoded(pydantic_core.to_json, value)


@pytest.mark.parametrize(
    "value",
    [
        {"at": datetime(2026, 12, 6, 3, 4, 5, 6, tzinfo=UTC), "whole": datetime(2026, 1, 1)},
        {"status": NotificationStatus.PENDING, "content": Content(body="hi", data={"n": 2**70})},
        ["é\n\u2028\x01", 1e16, -0.0, 0.1],
    ],
)
def test_examples(value: object) -> None:
    assert json_bytes.dumps(value) == pydantic_core.to_json(value)
