"""The spans of a run: what the tracing observer makes of the driver's hook.

Owns: the span tree and every span attribute (OpenTelemetry GenAI semantic conventions
plus the gateway's own `umg.*` ones). It is an `Observer` (adapters/observe.py); the
tracer comes from adapters/tracing.py.

The tree, per request:
- one SERVER span (`{endpoint} {model}`, e.g. `chat.completions gpt-4.1`) from the run's
  opening to its ledger row, so a stream's span covers its last chunk. Its parent is the
  caller's span when the request carried a `traceparent`. A job's run is a CONSUMER span
  `job.run {model}` with a link to the span of the request that created the job (the
  job stores that span's context) and no parent.
- one CLIENT span per provider attempt (`chat {upstream model}`), child of the run's
  span, from just before the call to the attempt's end. It is the current span while
  the provider is called, so the call carries its `traceparent` (adapters/tracing.py).

Attributes (request span / attempt span):
- GenAI: `gen_ai.operation.name` ("chat"), `gen_ai.provider.name` (the provider label;
  also as the older `gen_ai.system` on attempt spans), `gen_ai.request.model` (as asked / as sent
  upstream), `gen_ai.response.model`, `gen_ai.usage.input_tokens` (cached included) and
  `gen_ai.usage.output_tokens`, `gen_ai.response.finish_reasons`, `gen_ai.request.stream`,
  `gen_ai.response.time_to_first_chunk` (seconds: from the run's start on the request
  span, from the call's start on the attempt span), `server.address` / `server.port`
  (the provider's host; absent for the in-process Mock), `error.type`.
- Gateway: `umg.request_id` (the ledger row's), `umg.client_request_id` (x-request-id,
  when the client sent its own),
  `umg.endpoint`, `umg.key_prefix` (never the key), `umg.tenant`, `umg.project`,
  `umg.routing.strategy`, `umg.deployment`, `umg.attempt` / `umg.attempts`,
  on a failed attempt `umg.failure_reason` (the failure kind), `umg.next` (retry,
  fallback, gave_up, cut) and `umg.fell_back` (on the request span: whether any did), `umg.cost_usd` (an exact decimal string), `umg.status` (the ledger
  status), `umg.idempotent_replay` (false until idempotent replay exists).
- A failure sets the span status to ERROR with the error's client-visible message and
  adds an `exception` event (type and message, no stack). A stream that fails after its
  first chunk is such a failure on both spans, and `umg.after_first_chunk` says so.
- Content: only with `capture_content` on is the request's text written
  (`gen_ai.input.messages`, as JSON). Nothing else in a span comes from the request
  body, and no key: records carry only the key prefix (adapters/observe.py), and every
  message is redacted of anything key-shaped (adapters/telemetry.py) on the way in.

A span that is not being recorded (sampled out) gets no attributes built for it. The
run's `trace_id` and `span_id` go into `RunOpened.tags`, so the request log names them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from adapters.observe import (
    AttemptEnded,
    AttemptStarted,
    FirstChunk,
    Metered,
    Observer,
    Replayed,
    RunFinished,
    RunOpened,
    RunWatch,
)
from adapters.storage.records import KeyRecord
from adapters.telemetry import redact
from adapters.tracing import Tracing
from core.billing import format_usd
from core.errors import GatewayError

OPERATION = "chat"
JOB_ENDPOINT = "jobs"

Attributes = dict[str, str | bool | int | float | list[str]]


def _fail(span: Span, found: Attributes, kind: str, message: str | None) -> None:
    text = redact(message) if message else kind
    found["error.type"] = kind
    span.set_status(Status(StatusCode.ERROR, text))
    span.add_event("exception", {"exception.type": kind, "exception.message": text})


def opened_attributes(event: RunOpened) -> Attributes:
    found: Attributes = {
        "gen_ai.operation.name": OPERATION,
        "gen_ai.request.model": event.model,
        "gen_ai.request.stream": event.stream,
        "umg.request_id": event.request_id,
        "umg.endpoint": event.endpoint,
        "umg.key_prefix": event.key_prefix,
        "umg.tenant": event.tenant,
        "umg.project": event.project,
        "umg.routing.strategy": event.routing,
        "umg.idempotent_replay": False,
    }
    if event.client_request_id != event.request_id:
        found["umg.client_request_id"] = event.client_request_id
    return found


def attempt_attributes(event: AttemptStarted) -> Attributes:
    found: Attributes = {
        "gen_ai.operation.name": OPERATION,
        "gen_ai.provider.name": event.provider,
        "gen_ai.system": event.provider,
        "gen_ai.request.model": event.upstream_model,
        "umg.deployment": event.deployment,
        "umg.attempt": event.attempt,
    }
    if event.server_address:
        found["server.address"] = event.server_address
        if event.server_port is not None:
            found["server.port"] = event.server_port
    return found


def finished_attributes(event: RunFinished, found: Attributes) -> None:
    row = event.row
    found["gen_ai.usage.input_tokens"] = row.input_tokens + row.cached_input_tokens + row.cache_write_tokens
    found["gen_ai.usage.output_tokens"] = row.output_tokens
    found["umg.attempts"] = row.attempts
    found["umg.cost_usd"] = format_usd(row.cost)
    found["umg.status"] = row.status
    if row.provider:
        found["gen_ai.provider.name"] = row.provider
    if row.deployment:
        found["umg.deployment"] = row.deployment
    if event.routing:
        found["umg.routing.strategy"] = event.routing
    if event.upstream_model:
        found["gen_ai.response.model"] = event.upstream_model
    if event.finish_reason:
        found["gen_ai.response.finish_reasons"] = [event.finish_reason]


def content_attributes(event: RunOpened) -> Attributes:
    """The request's messages as `gen_ai.input.messages` (only with content capture on)."""
    request = event.request
    if request is None:
        return {}
    messages = [
        {"role": m.role, "parts": [{"type": "text", "content": m.text()}]} for m in request.messages
    ]
    return {"gen_ai.input.messages": json.dumps(messages)}


class RunSpans(RunWatch):
    """One run's spans (see the module docstring). Each span's attributes are gathered in
    a plain dict and set once, when it ends (the SDK checks every value it is given)."""

    def __init__(self, tracing: Tracing, event: RunOpened) -> None:
        self._tracer = tracing.tracer
        job = event.endpoint == JOB_ENDPOINT
        parent = None if job else tracing.extract(event.trace_headers)
        links = self._links(tracing, event) if job else None
        kind = SpanKind.CONSUMER if job else SpanKind.SERVER
        name = f"{'job.run' if job else event.endpoint} {event.model}".rstrip()
        self.span = self._tracer.start_span(name, context=parent, kind=kind, links=links)
        self._context = trace.set_span_in_context(self.span)
        self._recording = self.span.is_recording()
        ids = self.span.get_span_context()
        if ids.is_valid:  # for the request log line (adapters/observe.py: `tags`)
            event.tags["trace_id"] = f"{ids.trace_id:032x}"
            event.tags["span_id"] = f"{ids.span_id:016x}"
        self._attrs: Attributes = opened_attributes(event) if self._recording else {}
        if self._recording and tracing.capture_content:
            self._attrs.update(content_attributes(event))
        self._attempt: Span | None = None
        self._attempt_attrs: Attributes = {}
        self._attempt_at = 0.0
        self._token: object | None = None
        self._fell_back = False
        self._first_chunk = False

    @staticmethod
    def _links(tracing: Tracing, event: RunOpened) -> list[Link]:
        remote = tracing.extract(event.trace_headers)
        if remote is None:
            return []
        linked = trace.get_current_span(remote).get_span_context()
        return [Link(linked, {"umg.link": "created_by"})] if linked.is_valid else []

    def attempt_started(self, event: AttemptStarted) -> None:
        span = self._tracer.start_span(
            f"{OPERATION} {event.upstream_model}", context=self._context, kind=SpanKind.CLIENT
        )
        self._attempt_attrs = attempt_attributes(event) if span.is_recording() else {}
        self._attempt, self._attempt_at = span, event.at
        # current while the provider is called: its traceparent goes out with the call
        self._token = otel_context.attach(trace.set_span_in_context(span, self._context))

    def first_chunk(self, event: FirstChunk) -> None:
        self._first_chunk = True
        if self._recording:
            self._attrs["gen_ai.response.time_to_first_chunk"] = event.ttft
        if self._attempt is not None:
            self._attempt_attrs["gen_ai.response.time_to_first_chunk"] = event.at - self._attempt_at

    def metered(self, event: Metered) -> None:
        if self._attempt is None:
            return
        found, usage = self._attempt_attrs, event.usage
        found["gen_ai.usage.input_tokens"] = usage.total_input_tokens
        found["gen_ai.usage.output_tokens"] = usage.output_tokens
        found["umg.cost_usd"] = format_usd(event.cost)

    def attempt_ended(self, event: AttemptEnded) -> None:
        span, self._attempt = self._attempt, None
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None
        self._fell_back = self._fell_back or event.fell_back
        if span is None:
            return
        if span.is_recording():
            found = self._attempt_attrs
            if event.response_model:
                found["gen_ai.response.model"] = event.response_model
            if event.finish_reason:
                found["gen_ai.response.finish_reasons"] = [event.finish_reason]
            if not event.ok:
                kind = event.failure.value if event.failure is not None else "canceled"
                found["umg.failure_reason"] = kind
                found["umg.next"] = event.next
                found["umg.fell_back"] = event.fell_back
                found["umg.after_first_chunk"] = self._first_chunk
                _fail(span, found, kind, event.message)
            span.set_attributes(found)
        span.end()

    def run_finished(self, event: RunFinished) -> None:
        span = self.span
        if self._recording:
            found = self._attrs
            finished_attributes(event, found)
            found["umg.fell_back"] = self._fell_back
            if event.error is not None:
                found["umg.after_first_chunk"] = self._first_chunk
                _fail(span, found, _error_type(event.error), event.error.message)
            span.set_attributes(found)
        span.end()


def _error_type(error: GatewayError) -> str:
    return error.code or error.type


class TraceObserver(Observer):
    """Spans for every run (attach with `fan_out` next to the other observers)."""

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing

    def run_opened(self, event: RunOpened) -> RunWatch:
        return RunSpans(self.tracing, event)

    def replayed(self, event: Replayed) -> None:
        """A SERVER span `{endpoint} replay` (continuing the caller's trace) for an answer
        replayed from an idempotency record: no attempt spans, no usage."""
        span = self.tracing.tracer.start_span(
            f"{event.endpoint} replay", context=self.tracing.extract(event.trace_headers), kind=SpanKind.SERVER
        )
        if span.is_recording():
            found: Attributes = {
                "gen_ai.operation.name": OPERATION,
                "umg.request_id": event.request_id,
                "umg.endpoint": event.endpoint,
                "umg.key_prefix": event.key_prefix,
                "umg.tenant": event.tenant,
                "umg.project": event.project,
                "umg.idempotent_replay": True,
                "umg.status": "replayed",
                "http.response.status_code": event.status,
            }
            if event.original_request_id is not None:
                found["umg.original_request_id"] = event.original_request_id
            if event.client_request_id != event.request_id:
                found["umg.client_request_id"] = event.client_request_id
            span.set_attributes(found)
        span.end()


class JobCreation:
    """What `job_creation` yields: the W3C context to store with the job (`trace`), and
    `created(job_id)` to name the job on the span."""

    def __init__(self, span: Span | None, trace_headers: dict[str, str]) -> None:
        self.span = span
        self.trace = trace_headers

    def created(self, job_id: str) -> None:
        if self.span is not None and self.span.is_recording():
            self.span.set_attribute("umg.job_id", job_id)


@contextmanager
def job_creation(
    tracing: Tracing | None, headers: Mapping[str, str], key: KeyRecord
) -> Iterator[JobCreation]:
    """The SERVER span `jobs.create` around the creation of a job by `key` (continuing
    the caller's `traceparent`), whose context the job stores for its runs to link to.
    With tracing off: no span, and nothing to store. A refusal marks the span failed."""
    if tracing is None:
        yield JobCreation(None, {})
        return
    span = tracing.tracer.start_span(
        "jobs.create", context=tracing.extract(headers), kind=SpanKind.SERVER,
        attributes={
            "umg.endpoint": JOB_ENDPOINT, "umg.key_prefix": key.prefix,
            "umg.tenant": key.tenant, "umg.project": key.project,
        },
    )
    carrier: dict[str, str] = {}
    tracing.inject(carrier, trace.set_span_in_context(span))
    try:
        yield JobCreation(span, carrier)
    except GatewayError as err:
        found: Attributes = {}
        _fail(span, found, _error_type(err), err.message)
        span.set_attributes(found)
        raise
    finally:
        span.end()


__all__ = ["JobCreation", "RunSpans", "TraceObserver", "job_creation"]
