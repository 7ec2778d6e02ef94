"""Opaque cursors for newest-first pages keyed by time-ordered ids."""

from __future__ import annotations

import base64
import binascii

from herald.api.errors import FieldError


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        value = ""
    if len(value) != 36:
        raise FieldError("cursor", "is not a cursor returned by this API")
    return value
