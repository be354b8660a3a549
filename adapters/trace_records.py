"""A span of the gateway while it runs: a plain record, turned into the SDK's span at its end.

Owns: what one span holds during a request (its ids, the run's sampling decision, start
and end times, attributes, a failure, links) and what it becomes for the OpenTelemetry
span processors once it has ended: one `ReadableSpan`, the SDK's own type, built only
then and only when the span is recorded (a span sampled out builds nothing).

Why not the SDK's `Span`: each costs tens of microseconds to start and end (locks,
bounded attribute and event containers, a check of every attribute set, a copy made at
its end) plus a context attach and detach around the provider call; this record is a
handful of slots, and its W3C header is made from its ids (adapters/tracing.py).

Rules:
- The run's sampling decision is made once, for its first span (adapters/tracing.py);
  the spans under it share it (their ids, flags and `tracestate`).
- Times are Unix epoch nanoseconds, given by the caller (adapters/trace_spans.py turns
  the driver's clock readings into them); nothing here reads a clock.
- A span may be described late: `describe`, when set, is called once, when the span is
  built (`readable`), to fill its attributes, failure and end time from what its caller
  kept (adapters/trace_spans.py hands a run's spans over so, with the driver's events:
  they are built in the export's worker thread, and a span dropped unbuilt, as while the
  collector is down, is never described). It must not refer to the span itself (no
  cycle for the collector), and what it reads must no longer change.
- Attribute values are the gateway's own (str, bool, int, float, tuples of str): they
  are handed over as they are. The SDK's span limits from `OTEL_*` still apply at the
  end: the value length limit truncates strings, the count limit bounds the attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

Kind = Literal["server", "client", "consumer"]
AttributeValue = str | bool | int | float | tuple[str, ...]
Attributes = dict[str, AttributeValue]

KINDS: dict[str, SpanKind] = {
    "server": SpanKind.SERVER, "client": SpanKind.CLIENT, "consumer": SpanKind.CONSUMER,
}
UNSET = Status(StatusCode.UNSET)
NO_STATE = TraceState()  # immutable: shared by every run without a `tracestate`


class SpanRecord:
    """One span while it runs. `attributes` is the caller's to fill (only when
    `recording`: a span sampled out is never handed over)."""

    __slots__ = (
        "name", "kind", "trace_id", "span_id", "flags", "trace_state", "recording",
        "parent", "start_ns", "end_ns", "attributes", "failure", "links", "_context", "_under",
        "_trace_hex", "describe",
    )

    def __init__(
        self, name: str, kind: Kind, trace_id: int, span_id: int, flags: int,
        trace_state: TraceState, recording: bool, parent: SpanContext | None, start_ns: int,
        links: Sequence[Link] = (), *, under: SpanRecord | None = None, trace_hex: str | None = None,
    ) -> None:
        self.name = name
        self.kind: Kind = kind
        self.trace_id = trace_id
        self.span_id = span_id
        self.flags = flags  # W3C trace flags: sampled (and the random trace id bit)
        self.trace_state = trace_state
        self.recording = recording
        self.parent = parent  # a remote parent's context (a span under a record: `under`)
        self.start_ns = start_ns
        self.end_ns = start_ns
        self.attributes: Attributes = {}
        self.failure: tuple[str, str] | None = None  # (type, message): status ERROR
        self.links = links
        self._context: SpanContext | None = None
        self._under = under  # the record this span is under: its context is made at the end
        self._trace_hex = trace_hex
        self.describe: Callable[[SpanRecord], None] | None = None  # fills the span at `readable`

    @property
    def trace_hex(self) -> str:
        """The trace id in hex (made once per trace: the spans under this one share it)."""
        found = self._trace_hex
        if found is None:
            found = self._trace_hex = f"{self.trace_id:032x}"
        return found

    @property
    def span_hex(self) -> str:
        return f"{self.span_id:016x}"

    def headers(self) -> dict[str, str]:
        """This span as W3C `traceparent` (and `tracestate`, when there is one)."""
        found = {"traceparent": f"00-{self.trace_hex}-{self.span_id:016x}-{self.flags:02x}"}
        if self.trace_state:
            found["tracestate"] = self.trace_state.to_header()
        return found

    def context(self) -> SpanContext:
        """The SDK's context of this span (made once: the parent of the spans under it)."""
        if self._context is None:
            self._context = SpanContext(
                self.trace_id, self.span_id, False, TraceFlags(self.flags), self.trace_state
            )
        return self._context

    def child(self, name: str, kind: Kind, span_id: int, start_ns: int) -> SpanRecord:
        """A span under this one, sharing its trace and its sampling decision (its parent's
        SDK context is made when it is built, `readable`: off the Trio thread)."""
        return SpanRecord(
            name, kind, self.trace_id, span_id, self.flags, self.trace_state, self.recording,
            None, start_ns, under=self, trace_hex=self.trace_hex,
        )

    def fail(self, kind: str, message: str) -> None:
        """Status ERROR with `message`, and an `exception` event (type and message)."""
        self.failure = (kind, message)

    def readable(self, resource: Resource, scope: InstrumentationScope, limits: SpanLimits) -> ReadableSpan:
        """The ended span as the SDK's `ReadableSpan`, for the span processors (described
        first, once, when it is to be)."""
        describe = self.describe
        if describe is not None:
            self.describe = None
            describe(self)
        attributes = _limited(self.attributes, limits)
        status, events = UNSET, ()  # type: tuple[Status, tuple[Event, ...]]
        if self.failure is not None:
            kind, message = self.failure
            status = Status(StatusCode.ERROR, message)
            event = {"exception.type": kind, "exception.message": message}
            events = (Event("exception", event, self.end_ns),)
        return ReadableSpan(
            name=self.name, context=self.context(), resource=resource,
            parent=self._under.context() if self._under is not None else self.parent,
            attributes=attributes, events=events, links=self.links, kind=KINDS[self.kind],
            status=status, start_time=self.start_ns, end_time=self.end_ns,
            instrumentation_scope=scope,
        )


def _limited(attributes: Attributes, limits: SpanLimits) -> Attributes | BoundedAttributes:
    """`attributes` within the SDK's span limits (as they are in the usual case)."""
    length = limits.max_attribute_length
    if length is not None:
        attributes = {k: _cut(v, length) for k, v in attributes.items()}
    most = limits.max_span_attributes
    if most is not None and len(attributes) > most:
        return BoundedAttributes(most, attributes, immutable=True, max_value_len=length)
    return attributes


def _cut(value: AttributeValue, length: int) -> AttributeValue:
    if isinstance(value, str):
        return value[:length]
    if isinstance(value, tuple):
        return tuple(v[:length] for v in value)
    return value


__all__ = ["NO_STATE", "Attributes", "Kind", "SpanRecord"]
