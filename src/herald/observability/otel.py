"""OpenTelemetry tracing (the ``otel`` extra): each stage of a notification becomes a span.

``HERALD_OTEL_EXPORTER=otlp`` exports over OTLP/HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT``
(default http://localhost:4318), ``console`` prints spans to stderr. The spans' context is the
``traceparent`` header Herald carries on every message, so one trace runs from the API through
the outbox and the bus to the worker and the provider call, across processes.
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from herald import __version__
from herald.errors import ConfigError
from herald.observability import tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider


class OtelSpans:
    """tracing.SpanFactory over an OpenTelemetry tracer provider."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._tracer = provider.get_tracer("herald", __version__)
        self._propagator = TraceContextTextMapPropagator()

    @contextmanager
    def span(self, name: str, parent: str | None, attributes: Mapping[str, Any]) -> Iterator[str]:
        context = self._propagator.extract({tracing.HEADER: parent}) if parent else None
        with self._tracer.start_as_current_span(
            name, context=context, attributes={k: v for k, v in attributes.items() if v is not None}
        ):
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier)  # the current span: the one just started
            yield carrier[tracing.HEADER]


def provider_with(processor: SpanProcessor, service: str) -> TracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.version": __version__})
    )
    provider.add_span_processor(processor)
    return provider


def configure(exporter: str, service: str) -> None:
    """Install the exporter chosen by HERALD_OTEL_EXPORTER (``none`` leaves tracing as is)."""
    if exporter == "none":
        return
    try:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as exc:
        raise ConfigError(
            "HERALD_OTEL_EXPORTER needs the otel extra: pip install 'herald[otel]'"
        ) from exc
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter())
    else:
        processor = BatchSpanProcessor(ConsoleSpanExporter())
    provider = provider_with(processor, service)
    _installed.append(provider)
    tracing.install(OtelSpans(provider))


_installed: list[TracerProvider] = []


@atexit.register
def shutdown() -> None:
    """Export what is buffered; at exit, or before a process ends with ``os._exit``."""
    while _installed:
        _installed.pop().shutdown()
