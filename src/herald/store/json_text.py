"""How JSON columns are written: compact text from pydantic's Rust encoder.

SQLAlchemy's default, ``json.dumps``, was a tenth of a batch's cost to store (journal details,
headers, contents, stored responses: several JSON values per notification)."""

from __future__ import annotations

from typing import Any

import pydantic_core


def json_text(value: Any) -> str:
    return pydantic_core.to_json(value).decode()
