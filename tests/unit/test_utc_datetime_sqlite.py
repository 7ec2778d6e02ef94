"""UTCDateTime writes SQLite's DATETIME text itself (store/tables.py): it must be exactly what
SQLAlchemy's own processor makes of the naive UTC value, since SQL compares these as text
(``next_attempt_at < :now``) and SQLAlchemy parses them back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from herald.store.tables import UTCDateTime

DIALECT = sqlite.dialect()
OURS = UTCDateTime().dialect_impl(DIALECT).bind_processor(DIALECT)
SQLALCHEMYS = sa.DateTime().dialect_impl(DIALECT).bind_processor(DIALECT)
ZONES = st.builds(lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-839, 839))
AWARE = st.datetimes(
    min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=ZONES | st.just(UTC)
)


@given(
    st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=ZONES | st.just(UTC),
    )
)
def test_the_text_is_sqlalchemys_for_the_utc_value(value: datetime) -> None:
    assert OURS is not None
    assert SQLALCHEMYS is not None
    utc = value.astimezone(UTC).replace(tzinfo=None)
    assert OURS(value) == SQLALCHEMYS(utc)


def test_none_stays_none_and_a_naive_value_is_refused() -> None:
    assert OURS is not None
    assert OURS(None) is None
    with pytest.raises(ValueError, match="naive"):
        OURS(datetime(2026, 1, 1))


@given(st.lists(AWARE, min_size=1, max_size=6), st.lists(st.integers(0, 5), max_size=20))
def test_values_written_again_and_again_keep_their_own_text(
    values: list[datetime], picks: list[int]
) -> None:
    """The processor keeps the last value's text (a batch's rows share one `now`): the same
    object again, or another one after it, each still gets its own."""
    process = UTCDateTime().dialect_impl(DIALECT).bind_processor(DIALECT)
    assert process is not None
    assert SQLALCHEMYS is not None
    for value in [values[i % len(values)] for i in picks] + [None, values[0], values[0]]:
        expected = (
            None if value is None else SQLALCHEMYS(value.astimezone(UTC).replace(tzinfo=None))
        )
        assert process(value) == expected
