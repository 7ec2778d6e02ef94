"""The API's single-line check (schemas._single_line, one regular expression) refuses exactly
what its definition says: a control character other than tab, DEL, or a line break as
str.splitlines sees one (domain/headers.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.api.schemas import _single_line
from herald.domain.headers import is_single_line


def by_definition(value: str) -> bool:
    controls = any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value)
    return not controls and is_single_line(value) and len(value.splitlines()) <= 1


def accepted(value: str) -> bool:
    try:
        _single_line(value)
    except ValueError:
        return False
    return True


# Text around the characters that matter, so that they turn up often.
near_the_edges = st.text(
    alphabet=st.sampled_from(
        [chr(c) for c in range(0, 0xA0)] + ["\u2028", "\u2029", "\u200b", "é", "✓", "a"]
    )
)


@given(value=near_the_edges | st.text())
def test_refuses_exactly_what_the_definition_refuses(value: str) -> None:
    assert accepted(value) == by_definition(value)


@pytest.mark.parametrize("value", ["tab\there", "Olá ✓", "", "a" * 998])
def test_ordinary_lines_pass(value: str) -> None:
    assert accepted(value)


@pytest.mark.parametrize(
    "value", ["a\nb", "a\rb", "a\x00", "a\x7f", "a\x85b", "a\u2028b", "\x1b[31m"]
)
def test_breaks_and_controls_are_refused(value: str) -> None:
    assert not accepted(value)
