"""What may become an email header: one place that says what a line break is, so that the
API, template rendering and the email channel all refuse the same values.

A line break is anything :meth:`str.splitlines` splits on (CR, LF, VT, FF, the file/group/
record separators, NEL, U+2028 and U+2029): mail software disagrees on which of them end a
header line, so none may appear. NUL is refused too: SMTP servers truncate or reject at it.
"""

from __future__ import annotations

import re
from typing import Final

LINE_BREAKS: Final = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_FORBIDDEN: Final = LINE_BREAKS | {"\x00"}
# RFC 5322 3.6.8: a field name is printable US-ASCII except the colon.
_FIELD_NAME: Final = re.compile(r"[\x21-\x39\x3b-\x7e]+")


def is_single_line(value: str) -> bool:
    """True unless ``value`` has a line break (as ``str.splitlines`` sees one) or NUL."""
    return _FORBIDDEN.isdisjoint(value)


def is_field_name(name: str) -> bool:
    """True if ``name`` can be a header's name without ending it early or starting another."""
    return _FIELD_NAME.fullmatch(name) is not None
