"""The instrumentation hook: what the request driver (and the job runner, the health book)
tells observers as things happen. Logs, metrics and tracing are observers; none is wired
into a surface.

Owns: the observer contract, its event records, and the fan-out to several observers.

Contract (what an observer can rely on):
- `Driver(observer=...)` (through `Gateway(observer=...)`) takes one `Observer` or None.
  `fan_out(*observers)` makes one of several (None when there is none), so logs, metrics
  and tracing can all be attached. A run watched by several is told through one watch
  whose class is made once per combination of their types: each hook calls only the
  watches whose class overrides it, in the observers' order (no loop, no no-op call). With None the driver only tests `is not None` at each
  point: no record is built, no clock is read for it.
- Per request: `Observer.run_opened(RunOpened)` once the caller is authenticated and the
  body was read (also when the body was refused: `model` is then ""), and returns a
  `RunWatch` for that one run (or None: not interested). The driver then calls, on that
  watch, in this order:
      attempt_started(AttemptStarted)      each provider attempt, before the call
      first_chunk(FirstChunk)              at most once per run: the provider's first
                                           content arrived and is about to be sent (a
                                           whole answer: when it arrived); no fallback
                                           from here on
      metered(Metered)                     an attempt's usage was settled (tokens, cost);
                                           not for an attempt that consumed nothing
      attempt_ended(AttemptEnded)          each attempt that started, exactly once:
                                           ok, or its failure kind and what came next
                                           ("retry", "fallback", "gave_up"), or "cut"
                                           (the client left, a shutdown, a job's cancel:
                                           told just before run_finished)
      run_finished(RunFinished)            exactly once, after the ledger row is written
                                           and before the client is sent the end; it
                                           carries again what the run was told before:
                                           every `AttemptEnded` (`attempts`, in order) and
                                           the first chunk's `ttft`, so an observer that
                                           only counts the run at its end overrides this
                                           hook alone
  A run refused at admission (bad body, rate limit, budget, no route) has no attempt:
  run_opened, then run_finished. An unauthenticated request opens no run (no key, no
  row): it is told as `Observer.refused(Refused)`. An answer replayed from an
  idempotency record (server/idempotent.py) opens no run either (no provider call, no
  row): it is told as `Observer.replayed(Replayed)`, just before it is sent.
- Every call is synchronous and runs in the run's own Trio task, between the driver's
  awaits: a context variable set in `attempt_started` (a span made current) is seen by
  the provider call that follows, until `attempt_ended`. Calls must be quick and must
  not raise: the driver does not guard them (a failing observer is a bug to see).
- Times are `Clock.now()` seconds (monotonic, Trio's clock); `RunFinished.row.at` is the
  wall time. The ids: `request_id` is the gateway's own (the ledger row's, the budget
  reservations'); `client_request_id` is what the client sees (`x-request-id`: its own
  when it sent a sane one, else the same as `request_id`).
- `RunOpened.tags` is one dict per run, shared by all its observers: tracing puts the
  run's `trace_id` (and `span_id`) there when it opens its span, and the request log adds
  every tag to the run's log line (so the log line names the trace).
- Nothing secret is in any record: the key appears only as its public prefix, provider
  keys never. `RunFinished.error` is the client-visible error (its message is what the
  client was told, already stripped of provider keys by the provider adapters).
- Outside requests: `job_ran(JobRan)` when a job's run ends (each worker run),
  `webhook_sent(WebhookSent)` per delivery attempt, `breaker_changed(BreakerChanged)` when a
  deployment's circuit opens, half-opens or closes (adapters/health_book.py).

`Observer` and `RunWatch` are base classes whose methods do nothing: an observer overrides
only what it uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Literal, cast

from attrs import field, frozen

from adapters.storage.records import UsageRecord
from core.errors import GatewayError
from core.model import FailureKind, FinishReason, GatewayRequest, Usage

Next = Literal["answered", "retry", "fallback", "gave_up", "cut"]


@frozen
class RunOpened:
    request_id: str  # the gateway's id: the ledger row's
    client_request_id: str  # the id the client sees (x-request-id)
    endpoint: str  # the surface: "responses", "chat.completions", "messages", "jobs", ...
    key_prefix: str
    key_id: str
    tenant: str
    project: str
    model: str  # as asked ("" when the body was refused)
    stream: bool
    routing: str  # the strategy asked for
    trace_headers: Mapping[str, str]  # incoming `traceparent` / `tracestate`, if sent
    at: float
    # shared by every observer of this run: an observer may add string fields here at
    # `run_opened` (tracing adds `trace_id` and `span_id`) that others report (the
    # request log writes each one into the run's log line)
    tags: dict[str, str] = field(factory=dict)
    # the parsed request: its messages are content, which only an observer told to
    # capture content may write anywhere (tracing's `capture_content`)
    request: GatewayRequest | None = None


@frozen
class AttemptStarted:
    attempt: int  # 1, 2, ... across the whole run
    deployment: str
    provider: str
    upstream_model: str
    server_address: str | None  # the provider's host (None: in-process, the Mock)
    server_port: int | None
    at: float


@frozen
class FirstChunk:
    attempt: int
    ttft: float  # seconds from the run's start to the first content
    at: float


@frozen
class Metered:
    attempt: int
    usage: Usage
    cost: Decimal


@frozen
class AttemptEnded:
    attempt: int
    deployment: str
    provider: str
    ok: bool
    failure: FailureKind | None  # why it failed (None when ok or cut)
    message: str | None  # the failure's description (provider keys already stripped)
    next: Next  # what the run did next: "answered" when ok
    at: float
    response_model: str | None = None  # when ok: the model as the provider named it
    finish_reason: FinishReason | None = None  # when ok

    @property
    def fell_back(self) -> bool:
        return self.next == "fallback"


@frozen
class RunFinished:
    row: UsageRecord  # the ledger row as written: status, error code, tokens, cost, latency
    routing: str | None  # the strategy of the plan (None: refused before routing)
    finish_reason: FinishReason | None  # None when the run failed
    error: GatewayError | None
    upstream_model: str | None
    overhead_ms: float  # time in the gateway, excluding the waits on providers
    ledger_seconds: float  # how long writing the ledger row took (its commit included)
    at: float
    attempts: tuple[AttemptEnded, ...] = ()  # every attempt_ended of the run, in order
    ttft: float | None = None  # the FirstChunk's ttft (None: no content came)


@frozen
class Refused:
    """A request refused before a key was known (401): no run, no ledger row."""

    request_id: str
    client_request_id: str
    endpoint: str
    error: GatewayError
    at: float


@frozen
class Replayed:
    """An answer replayed from an idempotency record (server/idempotent.py): no run, no
    provider call, no ledger row."""

    request_id: str  # this request's own id
    client_request_id: str  # the id the client sees (x-request-id)
    original_request_id: str | None  # the gateway's id of the request whose answer it is
    endpoint: str  # the surface ("chat.completions", "responses", "messages", "jobs")
    key_prefix: str
    tenant: str
    project: str
    status: int  # the replayed HTTP status
    trace_headers: Mapping[str, str]  # incoming `traceparent` / `tracestate`, if sent
    at: float


@frozen
class JobRan:
    job_id: str
    tenant: str
    request_id: str | None  # the run's (its ledger row's); None if it never opened
    status: str  # the job's status after this run: succeeded | failed | queued | canceled
    attempt: int  # this run's number (1, 2, ...)
    error_code: str | None
    seconds: float  # the run's duration


@frozen
class WebhookSent:
    message_id: str
    job_id: str
    attempt: int
    status_code: int | None  # the receiver's answer (None: no answer)
    ok: bool
    error: str | None  # why it failed, as a short word (exception name, "refused")
    gave_up: bool
    detail: str | None = None  # a refusal's reason (the host and why; never the URL)


@frozen
class BreakerChanged:
    deployment: str
    before: str  # "closed" | "open" | "half_open"
    after: str
    at: float


class RunWatch:
    """One run's observer (see the module docstring for when each method is called)."""

    def attempt_started(self, event: AttemptStarted) -> None:
        return None

    def first_chunk(self, event: FirstChunk) -> None:
        return None

    def metered(self, event: Metered) -> None:
        return None

    def attempt_ended(self, event: AttemptEnded) -> None:
        return None

    def run_finished(self, event: RunFinished) -> None:
        return None


class Observer:
    """Told what the gateway does; each method is a no-op until overridden."""

    def run_opened(self, event: RunOpened) -> RunWatch | None:
        return None

    def refused(self, event: Refused) -> None:
        return None

    def replayed(self, event: Replayed) -> None:
        return None

    def job_ran(self, event: JobRan) -> None:
        return None

    def webhook_sent(self, event: WebhookSent) -> None:
        return None

    def breaker_changed(self, event: BreakerChanged) -> None:
        return None


HOOKS = ("attempt_started", "first_chunk", "metered", "attempt_ended", "run_finished")
Hook = Callable[[RunWatch, Any], None]


def _calls(hook: str, types: tuple[type[RunWatch], ...]) -> Hook:
    """`hook` of a run watched by watches of `types`: calling only the ones that override it."""
    own = [(i, getattr(t, hook)) for i, t in enumerate(types) if getattr(t, hook) is not getattr(RunWatch, hook)]
    if not own:
        return cast(Hook, getattr(RunWatch, hook))
    if len(own) == 1:
        ((at, only),) = own

        def one(self: RunWatch, event: Any) -> None:
            only(cast(_Watches, self).watches[at], event)

        return one
    if len(own) == 2:
        (at1, first), (at2, second) = own

        def two(self: RunWatch, event: Any) -> None:
            watches = cast(_Watches, self).watches
            first(watches[at1], event)
            second(watches[at2], event)

        return two

    def each(self: RunWatch, event: Any) -> None:
        watches = cast(_Watches, self).watches
        for at, call in own:
            call(watches[at], event)

    return each


class _Watches(RunWatch):
    """Several watches of one run, as one. Its class is made per combination of the
    watches' types (`fused`): each hook calls only the watches that override it, so a
    watch's no-op methods cost nothing and there is no loop per hook."""

    def __init__(self, watches: tuple[RunWatch, ...]) -> None:
        self.watches = watches


def fused(types: tuple[type[RunWatch], ...]) -> type[_Watches]:
    """The `_Watches` class for watches of `types`, in that order."""
    made = type("_Watches_" + "_".join(t.__name__ for t in types), (_Watches,), {
        hook: _calls(hook, types) for hook in HOOKS
    })
    return cast(type[_Watches], made)


class _Observers(Observer):
    def __init__(self, observers: tuple[Observer, ...]) -> None:
        self.observers = observers
        # the fused class per combination of watch types (a handful: each observer gives
        # one type of watch, or one of two, or none)
        self._fused: dict[tuple[type[RunWatch], ...], type[_Watches]] = {}

    def run_opened(self, event: RunOpened) -> RunWatch | None:
        watches = tuple(w for o in self.observers if (w := o.run_opened(event)) is not None)
        if len(watches) <= 1:
            return watches[0] if watches else None
        types = tuple(type(w) for w in watches)
        made = self._fused.get(types)
        if made is None:
            made = self._fused[types] = fused(types)
        return made(watches)

    def refused(self, event: Refused) -> None:
        for observer in self.observers:
            observer.refused(event)

    def replayed(self, event: Replayed) -> None:
        for observer in self.observers:
            observer.replayed(event)

    def job_ran(self, event: JobRan) -> None:
        for observer in self.observers:
            observer.job_ran(event)

    def webhook_sent(self, event: WebhookSent) -> None:
        for observer in self.observers:
            observer.webhook_sent(event)

    def breaker_changed(self, event: BreakerChanged) -> None:
        for observer in self.observers:
            observer.breaker_changed(event)


def fan_out(*observers: Observer | None) -> Observer | None:
    """One observer telling each of `observers` (None ones skipped); None if none is left.
    A fan-out among them is taken apart (its observers told in its place, in its order),
    so a run's hooks go through one fused watch, not one inside another."""
    present = tuple(
        inner for o in observers if o is not None
        for inner in (o.observers if isinstance(o, _Observers) else (o,))
    )
    if not present:
        return None
    return present[0] if len(present) == 1 else _Observers(present)


__all__ = [
    "AttemptEnded",
    "AttemptStarted",
    "BreakerChanged",
    "FirstChunk",
    "JobRan",
    "Metered",
    "Next",
    "Observer",
    "Refused",
    "Replayed",
    "RunFinished",
    "RunOpened",
    "RunWatch",
    "WebhookSent",
    "fan_out",
]
