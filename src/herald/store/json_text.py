"""How JSON columns are written: compact text (herald.json_bytes).

SQLAlchemy's default, ``json.dumps``, was a tenth of a batch's cost to store (journal details,
headers, contents, stored responses: several JSON values per notification)."""

from __future__ import annotations

from typing import Any

from herald import json_bytes


def json_text(value: Any) -> str:
    return json_bytes.dumps(value).decode()
