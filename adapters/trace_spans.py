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

When things happen (the fewer steps on the request path the better: over HTTP each
one has cost several times what it costs timed alone, docs/observability.md):
- `run_opened`: the sampling decision and the ids, once. The run's `trace_id` and
  `span_id` go into `RunOpened.tags`, so the request log names them.
- A run sampled out (`Unsampled`): after that only each attempt's `traceparent` (a fresh
  span id under the run's, flags not sampled, carried for the call and dropped at its end);
  no attribute, no record kept, nothing handed over. So is a sampled run that opens
  while no batch would take its spans (`Tracing.takes`: every exporter in `Backoff`'s
  pause or its queue full, as while the collector is down), its traceparents still
  saying sampled: its spans would be dropped as they end, so neither the events nor
  the records are kept for them (counted in `Tracing.unrecorded`). A run opened just
  before the pause ends is lost so, as one ending just before it was already.
- A recorded run (`RunSpans`): during the run each hook only keeps the driver's event
  (and `attempt_started` makes the attempt's record, whose ids its call carries); at
  `run_finished` the spans are handed to the batch in one call (adapters/tracing.py's
  `end_all`), each with what describes it: its attributes, failure and end time (the
  events' times) are built from the kept events only when the span is built
  (adapters/trace_records.py's `describe`), in the export's worker thread, and never
  for a span dropped unbuilt (while the collector is down). So an attempt's span leaves
  with its run's, and a run whose `run_finished` never comes (its ledger row could not
  be written: the driver tells no end) leaves no span.

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


# what a run's span says of its opening, kept past the run (not the `RunOpened`, whose
# parsed request may be large): model, stream, request id, endpoint, key prefix, tenant,
# project, routing, client request id
Opening = tuple[str, bool, str, str, str, str, str, str, str]


def opening(event: RunOpened) -> Opening:
    return (
        event.model, event.stream, event.request_id, event.endpoint, event.key_prefix,
        event.tenant, event.project, event.routing, event.client_request_id,
    )


def opened_attributes(head: Opening) -> Attributes:
    model, stream, request_id, endpoint, key_prefix, tenant, project, routing, client_request_id = head
    found: Attributes = {
        "gen_ai.operation.name": OPERATION,
        "gen_ai.request.model": model,
        "gen_ai.request.stream": stream,
        "umg.request_id": request_id,
        "umg.endpoint": endpoint,
        "umg.key_prefix": key_prefix,
        "umg.tenant": tenant,
        "umg.project": project,
        "umg.routing.strategy": routing,
        "umg.idempotent_replay": False,
    }
    if client_request_id != request_id:
        found["umg.client_request_id"] = client_request_id
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


class _Attempt:
    """What one attempt's span is made of, kept as the driver tells it (its record, made
    at the start for the call's `traceparent`, is kept beside it by `RunSpans`: this
    describes it at its build, and must not refer to it)."""

    __slots__ = ("observer", "started", "first_at", "metered", "ended", "after_first_chunk")

    def __init__(self, observer: TraceObserver, started: AttemptStarted) -> None:
        self.observer = observer
        self.started = started
        self.first_at: float | None = None  # the run's first chunk came in this attempt
        self.metered: Metered | None = None
        self.ended: AttemptEnded | None = None
        self.after_first_chunk = False

    def describe(self, span: SpanRecord) -> None:
        """The attempt's span with every attribute, ended (it was told `attempt_ended`)."""
        started, ended = self.started, self.ended
        assert ended is not None, "described only once the attempt ended"
        found = span.attributes = attempt_attributes(started)
        if self.first_at is not None:
            found["gen_ai.response.time_to_first_chunk"] = self.first_at - started.at
        metered = self.metered
        if metered is not None:
            found["gen_ai.usage.input_tokens"] = metered.usage.total_input_tokens
            found["gen_ai.usage.output_tokens"] = metered.usage.output_tokens
            found["umg.cost_usd"] = format_usd(metered.cost)
        if ended.response_model:
            found["gen_ai.response.model"] = ended.response_model
        if ended.finish_reason:
            found["gen_ai.response.finish_reasons"] = (ended.finish_reason,)
        if not ended.ok:
            kind = ended.failure.value if ended.failure is not None else "canceled"
            found["umg.failure_reason"] = kind
            found["umg.next"] = ended.next
            found["umg.fell_back"] = ended.fell_back
            found["umg.after_first_chunk"] = self.after_first_chunk
            _fail(span, found, kind, ended.message)
        span.end_ns = self.observer.ns(ended.at)


class _Finished:
    """What a finished run's own span is made of (what its opening said, its content when
    captured, the driver's end event), describing it at its build; it does not refer to
    the span, nor keep the run's parsed request (a waiting span stays small)."""

    __slots__ = ("observer", "head", "content", "finished", "ttft", "fell_back")

    def __init__(
        self, observer: TraceObserver, head: Opening, content: Attributes | None, finished: RunFinished,
        ttft: float | None, fell_back: bool,
    ) -> None:
        self.observer = observer
        self.head = head
        self.content = content
        self.finished = finished
        self.ttft = ttft
        self.fell_back = fell_back

    def describe(self, span: SpanRecord) -> None:
        """The run's span with every attribute, ended."""
        event = self.finished
        found = span.attributes
        found.update(opened_attributes(self.head))
        if self.content is not None:
            found.update(self.content)
        if self.ttft is not None:
            found["gen_ai.response.time_to_first_chunk"] = self.ttft
        finished_attributes(event, found)
        found["umg.fell_back"] = self.fell_back
        if event.error is not None:
            found["umg.after_first_chunk"] = self.ttft is not None
            _fail(span, found, _error_type(event.error), event.error.message)
        span.end_ns = self.observer.ns(event.at)


class Unsampled(RunWatch):
    """A run whose spans are not recorded (sampled out, or nobody would keep them: see the
    module docstring): only each attempt's `traceparent` goes out (the caller's trace
    continues upstream), nothing is kept."""

    def __init__(self, tracing: Tracing, span: SpanRecord) -> None:
        self._tracing = tracing
        self.span = span
        self._token: Token[SpanRecord | None] | None = None

    def attempt_started(self, event: AttemptStarted) -> None:
        self._token = self._tracing.carry(self._tracing.child(self.span, "", "client", 0))

    def attempt_ended(self, event: AttemptEnded) -> None:
        if self._token is not None:
            self._tracing.uncarry(self._token)
            self._token = None


class RunSpans(RunWatch):
    """One recorded run (see the module docstring): during the run only what the spans
    will say is kept (the driver's events as they are) and each attempt's record is made
    for its `traceparent`; when the run finishes every span of the run is handed to the
    batch in one call, each to be described (its attributes built) when it is built."""

    def __init__(self, observer: TraceObserver, event: RunOpened, span: SpanRecord) -> None:
        self._observer = observer
        self.opened = event
        self.span = span
        self._attempts: list[_Attempt] = []
        self._spans: list[SpanRecord] = []  # each attempt's record, beside it
        self._attempt: _Attempt | None = None  # the one in progress
        self._token: Token[SpanRecord | None] | None = None
        self._ttft: float | None = None
        self._fell_back = False  # whether an ended attempt fell back

    def attempt_started(self, event: AttemptStarted) -> None:
        observer = self._observer
        tracing = observer.tracing
        span = tracing.child(self.span, f"{OPERATION} {event.upstream_model}", "client", observer.ns(event.at))
        self._attempt = attempt = _Attempt(observer, event)
        self._attempts.append(attempt)
        self._spans.append(span)
        self._token = tracing.carry(span)  # its traceparent goes out with the call

    def first_chunk(self, event: FirstChunk) -> None:
        self._ttft = event.ttft
        if self._attempt is not None:
            self._attempt.first_at = event.at

    def metered(self, event: Metered) -> None:
        if self._attempt is not None:
            self._attempt.metered = event

    def attempt_ended(self, event: AttemptEnded) -> None:
        attempt, self._attempt = self._attempt, None
        if self._token is not None:
            self._observer.tracing.uncarry(self._token)
            self._token = None
        if attempt is not None:
            attempt.ended = event
            attempt.after_first_chunk = self._ttft is not None
            self._fell_back = self._fell_back or event.fell_back

    def run_finished(self, event: RunFinished) -> None:
        """Every span of the run handed over at once, undescribed: what each says is
        built from the events kept here when it is built (in the export's worker thread)."""
        ended = []
        for attempt, record in zip(self._attempts, self._spans, strict=True):
            if attempt.ended is not None:
                record.describe = attempt.describe
                ended.append(record)
        span = self.span
        observer, opened = self._observer, self.opened
        content = content_attributes(opened) if observer.tracing.capture_content else None
        span.describe = _Finished(observer, opening(opened), content, event, self._ttft, self._fell_back).describe
        ended.append(span)
        observer.tracing.end_all(ended)


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
        self._epoch_at = clock.epoch_at  # bound once: `ns` runs four times a run

    def ns(self, at: float) -> int:
        """The clock reading `at` as Unix epoch nanoseconds (as `epoch_ns`)."""
        return int(self._epoch_at(at) * 1e9)

    def run_opened(self, event: RunOpened) -> RunWatch:
        """The run's sampling decision and ids, made now, once; what else it costs is
        `RunSpans`'s (recorded) or `Unsampled`'s (only the `traceparent` of each call)."""
        tracing = self.tracing
        job = event.endpoint == JOB_ENDPOINT
        name = f"{'job.run' if job else event.endpoint} {event.model}".rstrip()
        headers = event.trace_headers or None
        span = tracing.start(
            name, "consumer" if job else "server", self.ns(event.at),
            parent=None if job else headers, linked=headers if job else None,
        )
        event.tags["trace_id"] = span.trace_hex  # for the request log line
        event.tags["span_id"] = span.span_hex
        if span.recording and tracing.takes():
            return RunSpans(self, event, span)
        if span.recording:  # sampled, but no batch would keep its spans now
            tracing.unrecorded += 1
        return Unsampled(tracing, span)

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


__all__ = ["JobCreation", "RunSpans", "TraceObserver", "Unsampled", "epoch_ns", "job_creation"]
