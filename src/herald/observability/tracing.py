"""W3C trace context (``traceparent``) carried from the API through every message of a
notification, so one trace id follows it through logs, the bus and (later) OpenTelemetry."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

HEADER = "traceparent"
_FORMAT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def _is_valid(traceparent: str) -> bool:
    match = _FORMAT.match(traceparent)
    return bool(match) and match.group(1) != "0" * 32 and match.group(2) != "0" * 16  # type: ignore[union-attr]


def start(incoming: str | None = None) -> str:
    """Continue the caller's trace when it sent a valid ``traceparent``, else start one."""
    if incoming and _is_valid(incoming.strip().lower()):
        return child(incoming.strip().lower())
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def child(traceparent: str) -> str:
    """The same trace, a new span: for a message published while handling another."""
    trace, flags = traceparent[3:35], traceparent[-2:]
    return f"00-{trace}-{os.urandom(8).hex()}-{flags}"


def propagate(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers for what a handler publishes, continuing the trace of what it consumed."""
    parent = headers.get(HEADER)
    return {HEADER: child(parent)} if parent and _is_valid(parent) else {}


def trace_id(headers: Mapping[str, str]) -> str | None:
    parent = headers.get(HEADER)
    return parent[3:35] if parent and _is_valid(parent) else None
