"""W3C trace context (``traceparent``) carried from the API through every message of a
notification, so one trace id follows it through logs, the bus and OpenTelemetry.

Each stage runs inside ``span(name, parent)``, which yields the traceparent for what the stage
publishes. Without OpenTelemetry that is just a new span id in the same trace; with it
(``HERALD_OTEL_EXPORTER``, see ``observability.otel``) it is a real span, exported.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

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


def trace_id(headers: Mapping[str, str]) -> str | None:
    parent = headers.get(HEADER)
    return parent[3:35] if parent and _is_valid(parent) else None


class SpanFactory(Protocol):
    def span(
        self, name: str, parent: str | None, attributes: Mapping[str, Any]
    ) -> AbstractContextManager[str]:
        """A span, child of ``parent`` (a root span without one); yields its traceparent."""
        ...


_exporter: SpanFactory | None = None


def install(factory: SpanFactory | None) -> None:
    """Route stages' spans to an exporter (OpenTelemetry), or back to plain propagation."""
    global _exporter
    _exporter = factory


@contextmanager
def span(name: str, parent: str | None, **attributes: Any) -> Iterator[str]:
    """One stage of a notification. ``parent`` None or invalid starts a new trace."""
    if _exporter is None:
        yield start(parent)
        return
    valid = parent.strip().lower() if parent and _is_valid(parent.strip().lower()) else None
    with _exporter.span(name, valid, attributes) as traceparent:
        yield traceparent


def headers(traceparent: str) -> dict[str, str]:
    return {HEADER: traceparent}
