"""Tracing: the OpenTelemetry SDK set up per app, and W3C trace context in and out.

Owns: building one `TracerProvider` per gateway (never the process-global one, so tests
and several apps in one process do not share spans), its exporters, and propagation:
reading an incoming `traceparent` / `tracestate` (`extract`) and writing the current
span's into a provider call's headers (`outgoing`). What the spans say is
adapters/trace_spans.py's.

Rules:
- Exporters come from `TracingSettings` (adapters/config.py reads the standard `OTEL_*`
  variables): OTLP over HTTP to `endpoint`, and/or the console (one JSON object per
  span per line on stdout, for development); with neither there is no `Tracing` at all (None),
  so the driver and the provider calls pay nothing.
- Every exporter sits behind a `BatchSpanProcessor`: ending a span only queues it; the
  SDK's worker thread exports in batches. An unreachable collector costs that thread
  its retries, never a request its latency; a full queue drops spans.
- The SDK itself still reads the `OTEL_*` variables that tune it (service name and
  resource attributes, sampler, batch sizes, OTLP headers, timeout, compression).
- OpenTelemetry's context lives in context variables: a Trio task started in a nursery
  gets a copy of its parent's, so a span made current in a run's task is seen by what
  that task calls (the provider call), never by a sibling task.
- `aclose` flushes and stops the exporters in a worker thread (it may wait on the
  network), giving up after `shutdown_seconds`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import trio
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from adapters.config import TracingSettings

SERVICE = "unified-model-gateway"
INSTRUMENTATION = "umg"


def one_line(span: ReadableSpan) -> str:
    """A span as one line of JSON (the console exporter's format)."""
    return str(span.to_json(indent=None)) + "\n"


def exporters(settings: TracingSettings) -> list[SpanExporter]:
    """The span exporters `settings` asks for (empty: tracing is off)."""
    found: list[SpanExporter] = []
    if "otlp" in settings.exporters:
        found.append(OTLPSpanExporter(endpoint=settings.endpoint))
    if "console" in settings.exporters:
        found.append(ConsoleSpanExporter(service_name=SERVICE, out=sys.stdout, formatter=one_line))
    return found


class Tracing:
    """One app's tracer provider, tracer and propagator."""

    def __init__(
        self,
        processors: list[SpanProcessor],
        *,
        capture_content: bool = False,
        shutdown_seconds: float = 5.0,
    ) -> None:
        resource = Resource.create({SERVICE_NAME: SERVICE})  # OTEL_SERVICE_NAME wins
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)  # aclose does
        for processor in processors:
            self.provider.add_span_processor(processor)
        self.tracer: Tracer = self.provider.get_tracer(INSTRUMENTATION)
        self.capture_content = capture_content
        self.shutdown_seconds = shutdown_seconds
        self._propagator = TraceContextTextMapPropagator()

    @classmethod
    def from_settings(cls, settings: TracingSettings) -> Tracing | None:
        """The app's tracing, or None when no exporter is configured (tracing off)."""
        found = exporters(settings)
        if not found:
            return None
        return cls(
            [BatchSpanProcessor(exporter) for exporter in found],
            capture_content=settings.capture_content,
        )

    def extract(self, headers: Mapping[str, str]) -> Context | None:
        """The remote parent in incoming `traceparent` / `tracestate` (None: none sent)."""
        if "traceparent" not in headers:
            return None
        return self._propagator.extract(headers)

    def outgoing(self) -> dict[str, str]:
        """`traceparent` (and `tracestate`) of the current span, for a provider call."""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        return carrier

    def inject(self, carrier: dict[str, str], context: Context) -> None:
        """Write the span of `context` into `carrier` as W3C headers."""
        self._propagator.inject(carrier, context=context)

    async def aclose(self) -> None:
        with trio.move_on_after(self.shutdown_seconds):
            await trio.to_thread.run_sync(self.provider.shutdown, abandon_on_cancel=True)


__all__ = ["Tracing", "exporters"]
