"""The ``Idempotency-Key`` header: what it may hold, declared once for FastAPI's parameter and
for the quicker route's own check (``quick_accept.py``)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Header

# Stripe's limit; a UUID fits with room to spare. Printable ASCII only.
_MAX_LENGTH = 255
_CHARACTERS = r"[\x20-\x7e]+"
_PATTERN = f"^{_CHARACTERS}$"  # as pydantic wants it (anchored: its $ is the end of the text)
_VALID = re.compile(_CHARACTERS)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=_MAX_LENGTH,
        pattern=_PATTERN,
        description="Repeats with the same key and body return the first response.",
    ),
]


def is_valid(key: str) -> bool:
    """Whether FastAPI would take ``key`` for an IdempotencyKey parameter."""
    return len(key) <= _MAX_LENGTH and _VALID.fullmatch(key) is not None
