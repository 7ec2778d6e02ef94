"""Structured logs: one event name plus key=value context.

    log = get_logger(__name__)
    log.info("delivery.sent", delivery_id=d.id, channel="email", attempt=2)

renders ``2026-11-21T10:00:00.123Z INFO herald.pipeline.worker delivery.sent delivery_id=…``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

_CONTEXT = "herald_context"


class StructuredLogger:
    __slots__ = ("_logger",)

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def _log(self, level: int, event: str, exc_info: bool, context: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, event, exc_info=exc_info, extra={_CONTEXT: context})

    def debug(self, event: str, **context: Any) -> None:
        self._log(logging.DEBUG, event, False, context)

    def info(self, event: str, **context: Any) -> None:
        self._log(logging.INFO, event, False, context)

    def warning(self, event: str, **context: Any) -> None:
        self._log(logging.WARNING, event, False, context)

    def error(self, event: str, **context: Any) -> None:
        self._log(logging.ERROR, event, False, context)

    def exception(self, event: str, **context: Any) -> None:
        """ERROR with the current exception's traceback."""
        self._log(logging.ERROR, event, True, context)


def get_logger(name: str) -> StructuredLogger:
    return StructuredLogger(name)


def _render(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"{stamp}.{int(record.msecs):03d}Z", record.levelname, record.name]
        parts.append(record.getMessage())
        context: dict[str, Any] = getattr(record, _CONTEXT, {})
        parts.extend(f"{k}={_render(v)}" for k, v in context.items() if v is not None)
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Their INFO lines are per request or per connection; ours say the same with context.
    for noisy in ("uvicorn.access", "aiosqlite", "alembic", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
