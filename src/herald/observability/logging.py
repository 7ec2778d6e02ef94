"""Structured logs: one event name plus context.

    log = get_logger(__name__)
    log.info("delivery.sent", delivery_id=d.id, channel="email", attempt=2)

renders, as JSON (for machines: one object per line)
``{"ts": "2026-11-21T10:00:00.123Z", "level": "INFO", "logger": "herald.pipeline.stages.deliver",
"event": "delivery.sent", "delivery_id": "…", "channel": "email", "attempt": 2}``
or as text (for people at a terminal)
``2026-11-21T10:00:00.123Z INFO herald.pipeline.stages.deliver delivery.sent delivery_id=… …``.

What goes into the context is chosen at the call site: ids, channels, attempts, error
classes; never message bodies or credentials.
"""

from __future__ import annotations

import functools
import json
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
        logger = self._logger
        if not logger.isEnabledFor(level):
            return
        # Logger.log would first walk the stack for the caller's file and line, which no line
        # of ours prints: a third of a line's cost, and the pipeline logs per notification.
        record = logger.makeRecord(
            logger.name,
            level,
            "",
            0,
            event,
            (),
            sys.exc_info() if exc_info else None,
            extra={_CONTEXT: context},
        )
        logger.handle(record)

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


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _timestamp(record: logging.LogRecord) -> str:
    return f"{_second(int(record.created))}.{int(record.msecs):03d}Z"


_JSON = json.JSONEncoder(default=str, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        context: dict[str, Any] = getattr(record, _CONTEXT, {})
        entry.update((k, v) for k, v in context.items() if v is not None and k not in entry)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _JSON.encode(entry)


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.name]
        parts.append(record.getMessage())
        context: dict[str, Any] = getattr(record, _CONTEXT, {})
        parts.extend(f"{k}={_render(v)}" for k, v in context.items() if v is not None)
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str, fmt: str = "auto") -> None:
    """Log to stderr; ``fmt`` json, text, or auto (text on a terminal, else JSON)."""
    handler = logging.StreamHandler(sys.stderr)
    as_text = fmt == "text" or (fmt == "auto" and sys.stderr.isatty())
    handler.setFormatter(KeyValueFormatter() if as_text else JsonFormatter())
    # No line shows the thread or process, which every record would otherwise look up.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Their INFO lines are per request or per connection; ours say the same with context.
    # httpx logs each request's full URL at INFO: webhook URLs may carry tokens.
    for noisy in ("uvicorn.access", "alembic", "mail.log", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def tag_every_line(**fields: Any) -> None:
    """Add ``fields`` to every line this process logs from now on (`herald serve`'s consumer
    process names itself, its lines sharing the parent's output)."""

    def tag(record: logging.LogRecord) -> bool:
        setattr(record, _CONTEXT, {**fields, **getattr(record, _CONTEXT, {})})
        return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(tag)
