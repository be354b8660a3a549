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

The spans are adapters/trace_records.py's records, started, carried into the provider
call and ended through `Tracing` (adapters/tracing.py). Their times are the driver's
readings of the gateway clock (`at` of each record, as epoch nanoseconds): no clock is
read here. This module imports nothing of OpenTelemetry: with tracing off it costs the
gateway nothing to import (its types come from adapters/tracing.py only for checking).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import Token
from typing import TYPE_CHECKING

from adapters.clock import Clock
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
from core.billing import format_usd
from core.errors import GatewayError

if TYPE_CHECKING:  # the SDK is imported only when tracing is on (adapters/tracing.py)
    from adapters.trace_records import Attributes, SpanRecord
    from adapters.tracing import Tracing

OPERATION = "chat"
JOB_ENDPOINT = "jobs"


def _fail(span: SpanRecord, found: Attributes, kind: str, message: str | None) -> None:
    found["error.type"] = kind
    span.fail(kind, redact(message) if message else kind)


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
        found["gen_ai.response.finish_reasons"] = (event.finish_reason,)


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
    """One run's spans (see the module docstring): its span, and the attempt in progress."""

    def __init__(self, observer: TraceObserver, event: RunOpened) -> None:
        tracing = self._tracing = observer.tracing
        self._ns = observer.ns
        job = event.endpoint == JOB_ENDPOINT
        name = f"{'job.run' if job else event.endpoint} {event.model}".rstrip()
        headers = event.trace_headers or None
        self.span = tracing.start(
            name, "consumer" if job else "server", self._ns(event.at),
            parent=None if job else headers, linked=headers if job else None,
        )
        event.tags["trace_id"] = self.span.trace_hex  # for the request log line
        event.tags["span_id"] = self.span.span_hex
        if self.span.recording:
            self.span.attributes.update(opened_attributes(event))
            if tracing.capture_content:
                self.span.attributes.update(content_attributes(event))
        self._attempt: SpanRecord | None = None
        self._attempt_at = 0.0
        self._token: Token[SpanRecord | None] | None = None
        self._fell_back = False
        self._first_chunk = False

    def attempt_started(self, event: AttemptStarted) -> None:
        span = self._tracing.child(self.span, f"{OPERATION} {event.upstream_model}", "client", self._ns(event.at))
        if span.recording:
            span.attributes = attempt_attributes(event)
        self._attempt, self._attempt_at = span, event.at
        self._token = self._tracing.carry(span)  # its traceparent goes out with the call

    def first_chunk(self, event: FirstChunk) -> None:
        self._first_chunk = True
        if self.span.recording:
            self.span.attributes["gen_ai.response.time_to_first_chunk"] = event.ttft
        if self._attempt is not None and self._attempt.recording:
            self._attempt.attributes["gen_ai.response.time_to_first_chunk"] = event.at - self._attempt_at

    def metered(self, event: Metered) -> None:
        if self._attempt is None or not self._attempt.recording:
            return
        found, usage = self._attempt.attributes, event.usage
        found["gen_ai.usage.input_tokens"] = usage.total_input_tokens
        found["gen_ai.usage.output_tokens"] = usage.output_tokens
        found["umg.cost_usd"] = format_usd(event.cost)

    def attempt_ended(self, event: AttemptEnded) -> None:
        span, self._attempt = self._attempt, None
        if self._token is not None:
            self._tracing.uncarry(self._token)
            self._token = None
        self._fell_back = self._fell_back or event.fell_back
        if span is None:
            return
        if span.recording:
            found = span.attributes
            if event.response_model:
                found["gen_ai.response.model"] = event.response_model
            if event.finish_reason:
                found["gen_ai.response.finish_reasons"] = (event.finish_reason,)
            if not event.ok:
                kind = event.failure.value if event.failure is not None else "canceled"
                found["umg.failure_reason"] = kind
                found["umg.next"] = event.next
                found["umg.fell_back"] = event.fell_back
                found["umg.after_first_chunk"] = self._first_chunk
                _fail(span, found, kind, event.message)
        self._tracing.end(span, self._ns(event.at))

    def run_finished(self, event: RunFinished) -> None:
        span = self.span
        if span.recording:
            found = span.attributes
            finished_attributes(event, found)
            found["umg.fell_back"] = self._fell_back
            if event.error is not None:
                found["umg.after_first_chunk"] = self._first_chunk
                _fail(span, found, _error_type(event.error), event.error.message)
        self._tracing.end(span, self._ns(event.at))


def _error_type(error: GatewayError) -> str:
    return error.code or error.type


def epoch_ns(clock: Clock, at: float) -> int:
    """The clock reading `at` (`Clock.now()`) as Unix epoch nanoseconds."""
    return int(clock.epoch_at(at) * 1e9)


class TraceObserver(Observer):
    """Spans for every run (attach with `fan_out` next to the other observers); `clock`
    is the gateway's, whose readings the records carry."""

    def __init__(self, tracing: Tracing, clock: Clock) -> None:
        self.tracing = tracing
        self.clock = clock

    def ns(self, at: float) -> int:
        return epoch_ns(self.clock, at)

    def run_opened(self, event: RunOpened) -> RunWatch:
        return RunSpans(self, event)

    def replayed(self, event: Replayed) -> None:
        """A SERVER span `{endpoint} replay` (continuing the caller's trace) for an answer
        replayed from an idempotency record: no attempt spans, no usage."""
        at = self.ns(event.at)
        span = self.tracing.start(f"{event.endpoint} replay", "server", at, parent=event.trace_headers or None)
        if span.recording:
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
            span.attributes.update(found)
        self.tracing.end(span, at)


class JobCreation:
    """What `job_creation` yields: the W3C context to store with the job (`trace`), and
    `created(job_id)` to name the job on the span."""

    def __init__(self, span: SpanRecord | None, trace_headers: dict[str, str]) -> None:
        self.span = span
        self.trace = trace_headers

    def created(self, job_id: str) -> None:
        if self.span is not None and self.span.recording:
            self.span.attributes["umg.job_id"] = job_id


@contextmanager
def job_creation(
    tracing: Tracing | None, clock: Clock, headers: Mapping[str, str], key: KeyRecord
) -> Iterator[JobCreation]:
    """The SERVER span `jobs.create` around the creation of a job by `key` (continuing
    the caller's `traceparent`), whose context the job stores for its runs to link to.
    With tracing off: no span, and nothing to store. A refusal marks the span failed."""
    if tracing is None:
        yield JobCreation(None, {})
        return
    span = tracing.start("jobs.create", "server", epoch_ns(clock, clock.now()), parent=headers or None)
    if span.recording:
        span.attributes.update({
            "umg.endpoint": JOB_ENDPOINT, "umg.key_prefix": key.prefix,
            "umg.tenant": key.tenant, "umg.project": key.project,
        })
    try:
        yield JobCreation(span, span.headers())
    except GatewayError as err:
        _fail(span, span.attributes, _error_type(err), err.message)
        raise
    finally:
        tracing.end(span, epoch_ns(clock, clock.now()))


__all__ = ["JobCreation", "RunSpans", "TraceObserver", "epoch_ns", "job_creation"]
