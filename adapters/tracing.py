"""Tracing: the OpenTelemetry SDK set up per app, a run's spans started and handed over, and
W3C trace context in and out.

Owns: building one `TracerProvider` per gateway (never the process-global one, so tests
and several apps in one process do not share spans), its exporters, the sampling
decision of a run, the ids of its spans, handing ended spans to the span processors,
and propagation: reading an incoming `traceparent` / `tracestate` (`extract`) and writing
the span being called into a provider call's headers (`outgoing`). What the spans say
is adapters/trace_spans.py's; what a span holds while it runs is adapters/trace_records.py's.

This module (and with it the SDK) is imported only when tracing is configured
(server/services.py): a gateway with tracing off never loads `opentelemetry`.

Rules:
- Exporters come from `TracingSettings` (adapters/config/tracing.py reads the standard `OTEL_*`
  variables): OTLP over HTTP to `endpoint`, and/or the console (one JSON object per
  span per line on stdout, for development); with neither there is no `Tracing` at all (None),
  so the driver and the provider calls pay nothing.
- Every exporter sits behind a `TrioBatch` (adapters/trace_batch.py): ending a span
  only appends its record to a list on the Trio thread (the SDK's span is built in the
  export, in the worker thread, and a run's spans are described there too: their
  attributes, adapters/trace_records.py's `describe`); a full batch (or, on a timer, what
  waits) goes to the exporter in one worker-thread call, and a full queue drops spans,
  counted (OTEL_BSP_*). Any SDK `SpanProcessor` may be given instead (tests do).
  The OTLP exporter is the SDK's encoding with adapters/trace_otlp.py's encoder (the
  same request, a fraction of the work), wrapped in `Backoff` (adapters/trace_export.py):
  while the collector cannot be reached, batches are dropped without being encoded.
- The gateway's spans are `SpanRecord`s (adapters/trace_records.py), not SDK spans:
  `start` makes the sampling decision once per run with the provider's sampler
  (OTEL_TRACES_SAMPLER; a run continuing no trace is a root: the sampler is not shown
  OpenTelemetry's current span, and one that decides every root alike, as the default
  `parentbased_always_on` does, is asked once when the `Tracing` is made), ids come from the provider's id generator, and `end` (one
  span) or `end_all` (a run's spans at once) hands the records to each `TrioBatch` and
  the SDK's `ReadableSpan` to any other processor's `on_end` (processors get no
  `on_start`: the span is handed over once it has ended). A span not recorded is
  never built. `takes` says whether spans ending now would be kept at all (while
  every batch would drop them, as while the collector is down, a run is not recorded:
  adapters/trace_spans.py). The SDK's `tracer` is still there for code that wants SDK spans.
- The span being called is carried in a context variable of this `Tracing` (`carry`,
  set by the attempt span for the provider call, in the run's task): `outgoing` makes
  its W3C headers from its ids, or, with none carried, from OpenTelemetry's current span.
  OpenTelemetry's context lives in context variables too: a Trio task started in a
  nursery gets a copy of its parent's, never a sibling's.
- The SDK itself still reads the `OTEL_*` variables that tune it (service name and
  resource attributes, sampler, id generator, span limits, batch sizes, OTLP headers,
  timeout, compression).
- `aclose` flushes and stops the exporters in a worker thread (it may wait on the
  network), giving up after `shutdown_seconds`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from contextvars import ContextVar, Token

import trio
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    Decision,
    SamplingResult,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanKind, TraceFlags, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from adapters.config.tracing import TracingSettings
from adapters.trace_batch import BatchSchedule, TrioBatch
from adapters.trace_export import Backoff
from adapters.trace_otlp import OtlpExporter
from adapters.trace_records import KINDS, NO_STATE, Kind, SpanRecord

SERVICE = "unified-model-gateway"
# the SDK's samplers whose decision for a root (no parent) is the same for every trace
FIXED_ROOT = (ALWAYS_ON, ALWAYS_OFF, DEFAULT_ON, DEFAULT_OFF)
ROOT = Context()  # what the sampler is asked with for a run that continues no trace
SAMPLED = frozenset({Decision.RECORD_AND_SAMPLE})
RECORDING = frozenset({Decision.RECORD_ONLY, Decision.RECORD_AND_SAMPLE})
INSTRUMENTATION = "umg"


def _says(result: SamplingResult) -> tuple[bool, bool]:
    """Whether a sampling result samples the span, and whether it records it."""
    return result.decision in SAMPLED, result.decision in RECORDING


def one_line(span: ReadableSpan) -> str:
    """A span as one line of JSON (the console exporter's format)."""
    return str(span.to_json(indent=None)) + "\n"


def exporters(settings: TracingSettings) -> list[SpanExporter]:
    """The span exporters `settings` asks for (empty: tracing is off)."""
    found: list[SpanExporter] = []
    if "otlp" in settings.exporters:
        found.append(Backoff(OtlpExporter(endpoint=settings.endpoint)))
    if "console" in settings.exporters:
        found.append(ConsoleSpanExporter(service_name=SERVICE, out=sys.stdout, formatter=one_line))
    return found


class Tracing:
    """One app's tracer provider, span processors, sampler, id generator and propagator."""

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
            self.provider.add_span_processor(processor)  # for the SDK's tracer, and shutdown
        self.tracer: Tracer = self.provider.get_tracer(INSTRUMENTATION)
        self.capture_content = capture_content
        self.shutdown_seconds = shutdown_seconds
        self.unrecorded = 0  # sampled runs not recorded: no processor would have kept their spans
        batches = [p for p in processors if isinstance(p, TrioBatch)]
        for batch in batches:
            batch.build = self.readable  # built in its export, in the worker thread
        self._processors = tuple(processors)
        self._batches = tuple(batches)  # get the ended records
        self._others = tuple(p for p in processors if not isinstance(p, TrioBatch))  # the SDK's span
        self._sampler = self.provider.sampler
        self._ids = self.provider.id_generator
        self._random_ids = self._ids.is_trace_id_random()  # the generator's, not per id
        # a run without a remote parent is a root, asked with no context: a sampler that
        # decides every root alike (always_on / always_off, alone or parent-based, the
        # default being parentbased_always_on) is asked once, here, not on every request
        self._root_decision = (
            self._sampler.should_sample(ROOT, 0, "", SpanKind.SERVER)
            if any(self._sampler is fixed for fixed in FIXED_ROOT) else None
        )
        self._root_says = _says(self._root_decision) if self._root_decision is not None else (False, False)
        self._resource = self.provider.resource
        self._scope = InstrumentationScope(INSTRUMENTATION)
        self._limits = SpanLimits()  # from OTEL_*_LIMIT, as the provider's own
        self._propagator = TraceContextTextMapPropagator()
        self._carried: ContextVar[SpanRecord | None] = ContextVar(f"umg_trace_{id(self)}", default=None)

    @classmethod
    def from_settings(cls, settings: TracingSettings) -> Tracing | None:
        """The app's tracing, or None when no exporter is configured (tracing off)."""
        found = exporters(settings)
        if not found:
            return None
        schedule = BatchSchedule(settings.batch_delay, settings.batch_queue, settings.batch_size)
        return cls(
            [TrioBatch(exporter, schedule) for exporter in found],
            capture_content=settings.capture_content,
        )

    def start(
        self, name: str, kind: Kind, start_ns: int, *,
        parent: Mapping[str, str] | None = None, linked: Mapping[str, str] | None = None,
    ) -> SpanRecord:
        """A run's first span: continuing the trace in the W3C headers `parent` (if any),
        linked to the span in the headers `linked` (if any); the sampler decides here,
        once, for it and every span under it."""
        context = self.extract(parent) if parent else None
        remote = trace.get_current_span(context).get_span_context() if context is not None else None
        if remote is not None and not remote.is_valid:
            remote = None
        trace_id = remote.trace_id if remote is not None else self._ids.generate_trace_id()
        links = self._links(linked) if linked else ()
        decision = self._root_decision if remote is None else None
        if decision is None:
            decision = self._sampler.should_sample(
                context if remote is not None else ROOT, trace_id, name, KINDS[kind], None, links
            )
        sampled, recording = self._root_says if decision is self._root_decision else _says(decision)
        flags = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
        random = remote.trace_flags.random_trace_id if remote is not None else self._random_ids
        if random:
            flags |= TraceFlags.RANDOM_TRACE_ID
        record = SpanRecord(
            name, kind, trace_id, self._ids.generate_span_id(), flags,
            decision.trace_state or NO_STATE, recording, remote, start_ns, links,
        )
        if decision.attributes:
            record.attributes.update(decision.attributes)
        return record

    def child(self, parent: SpanRecord, name: str, kind: Kind, start_ns: int) -> SpanRecord:
        """A span under `parent` (same trace, same sampling decision)."""
        return parent.child(name, kind, self._ids.generate_span_id(), start_ns)

    def takes(self) -> bool:
        """Whether a run opened now is worth recording: some processor would keep its
        spans were they ending now (any processor other than a `TrioBatch` does; a batch
        does unless its queue is full, its exporter in a pause or it is shut down).
        A `Tracing` without processors records (what its spans cost is counted so)."""
        if self._others or not self._batches:
            return True
        for batch in self._batches:
            if batch.takes():
                return True
        return False

    def end(self, record: SpanRecord, end_ns: int) -> None:
        """End `record`: a recorded span goes to every span processor: the record itself to
        a `TrioBatch` (built at its export), the SDK's span to any other processor."""
        record.end_ns = end_ns
        if not record.recording:
            return
        for batch in self._batches:
            batch.on_end_record(record)
        if self._others:
            span = self.readable(record)
            for processor in self._others:
                processor.on_end(span)

    def end_all(self, records: Sequence[SpanRecord]) -> None:
        """Hand over the ended, recorded spans of one run at once (they share its sampling
        decision): one call per `TrioBatch`, the SDK's span to any other processor."""
        for batch in self._batches:
            batch.on_end_records(records)
        if self._others:
            for record in records:
                span = self.readable(record)
                for processor in self._others:
                    processor.on_end(span)

    def readable(self, record: SpanRecord) -> ReadableSpan:
        """An ended record as the SDK's `ReadableSpan` (in any thread: it is not changed
        once ended)."""
        return record.readable(self._resource, self._scope, self._limits)

    def _links(self, headers: Mapping[str, str]) -> Sequence[Link]:
        remote = self.extract(headers)
        if remote is None:
            return ()
        linked = trace.get_current_span(remote).get_span_context()
        return (Link(linked, {"umg.link": "created_by"}),) if linked.is_valid else ()

    def carry(self, record: SpanRecord) -> Token[SpanRecord | None]:
        """Make `record` the span a provider call from this task carries (`outgoing`)."""
        return self._carried.set(record)

    def uncarry(self, token: Token[SpanRecord | None]) -> None:
        self._carried.reset(token)

    def extract(self, headers: Mapping[str, str]) -> Context | None:
        """The remote parent in incoming `traceparent` / `tracestate` (None: none sent)."""
        if "traceparent" not in headers:
            return None
        return self._propagator.extract(headers)

    def outgoing(self) -> dict[str, str]:
        """`traceparent` (and `tracestate`) of the carried span, or of OpenTelemetry's
        current span when none is carried, for a provider call."""
        record = self._carried.get()
        if record is not None:
            return record.headers()
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        return carrier

    async def aclose(self) -> None:
        with trio.move_on_after(self.shutdown_seconds):
            await trio.to_thread.run_sync(self.provider.shutdown, abandon_on_cancel=True)


__all__ = ["Tracing", "exporters"]
