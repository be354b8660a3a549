"""The fallback state machine of ONE request: which deployment to call, when, and when to stop.

Owns: retry, backoff, fallback and failure decisions for a single request, as a pure
machine. `start(deployments, policy, now)` and `step(state, event, now)` return a new
frozen `Attempts` state plus the actions the driver (adapters/runner.py) must perform.
No I/O, no clock: `now` is an argument (it may go backwards; nothing here breaks).

Phases: calling -> (streaming) -> succeeded | failed | cancelled, with sleeping between
tries. `succeeded`, `failed` and `cancelled` are terminal.

Rules:
- Deployments are tried in plan order, never going back (`state.plan`: the given plan,
  whose untried tail the cross-provider rule below may reorder). Every call is one attempt;
  attempts are numbered 1.. across the whole request. Each CallProvider carries the
  deadline min(now + attempt_timeout, total deadline), where the total deadline is the
  `now` given to `start` plus `total_timeout`.
- A retryable failure (`core.model.RETRYABLE_KINDS`) before the first chunk retries the
  same deployment after a sleep when it still has retries left (`retries_per_deployment`
  retries after the first try), the attempt budget (`max_attempts`, total) is not spent
  and the sleep ends before the total deadline. The sleep is the provider's retry-after
  when given, else min(max_backoff, base_backoff * 2**(tries_on_this_deployment - 1)).
  A retry-after above `max_retry_after` gives up on this deployment at once.
- Fallback across providers (core/fallback.py): after a provider-level failure (5xx,
  overloaded, timeout, connect error, stream cut) the untried deployments are reordered so
  that those of providers not yet down come first, and when one exists it is called at
  once, without retrying the failed deployment or sleeping. So a plan with two providers
  reaches the second right after the first one fails that way.
- Otherwise the next deployment is called at once (no sleep), if attempts and time remain.
  A sleep that would end after the total deadline is never taken: the machine moves on to
  the next deployment, or fails when there is none.
- When nothing remains the request fails with an error matching the LAST failure kind:
  timeout -> UpstreamTimeout, rate_limited -> UpstreamRateLimited (its retry-after
  carried), anything else -> UpstreamError. The message says how many attempts failed,
  the last kind and every attempt as "deployment id: outcome"; never the providers' own
  messages.
- A non-retryable failure fails at once, with no fallback: bad_request -> UpstreamRejected,
  context_length_exceeded -> ContextLengthExceeded(param="messages"), content_filter ->
  ContentFiltered (these three pass the provider's detail on, shortened), auth ->
  UpstreamError (502: the gateway's own provider credentials are wrong; no details).
- After FirstChunk (phase streaming) there is no fallback and no retry: any failure ends
  the request with Fail(UpstreamError, after_first_chunk=True); the client must see an
  explicit error, never a clean end. Completed -> Finish (also allowed before FirstChunk:
  a non-streamed call).
- ClientGone in any non-terminal phase cancels: the in-flight attempt is recorded as
  "client_gone" and the action is Fail(ClientClosed). In a terminal phase ClientGone is
  ignored (a disconnect can race with the end); every other event there is illegal.
- Woke is legal only while sleeping; FirstChunk only while calling.
- The transitions are ONE table, `TRANSITIONS`, mapping (phase, event type) -> handler.
  A pair not in the table raises `IllegalTransition`: a bug in the driver, not a client
  error, so it is a plain RuntimeError and not a GatewayError.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeAlias

from attrs import evolve, field, frozen, validators

from core.catalog import Deployment
from core.errors import (
    ClientClosed,
    ContentFiltered,
    ContextLengthExceeded,
    GatewayError,
    NoRouteAvailable,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from core.fallback import PROVIDER_DOWN_KINDS, PROVIDER_DOWN_OUTCOMES, prefer_live, switch_provider
from core.model import RETRYABLE_KINDS, FailureKind, Usage

_DETAIL_LIMIT = 300  # characters of a provider's detail passed on to the client


class IllegalTransition(RuntimeError):
    """The driver fed an event the current phase does not accept (a programming error)."""


class Phase(enum.Enum):
    CALLING = "calling"
    STREAMING = "streaming"
    SLEEPING = "sleeping"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: frozenset[Phase] = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})


@frozen
class AttemptPolicy:
    max_attempts: int = field(default=4, validator=validators.ge(1))  # across deployments
    retries_per_deployment: int = field(default=1, validator=validators.ge(0))
    base_backoff: float = field(default=0.25, validator=validators.ge(0))
    max_backoff: float = field(default=4.0, validator=validators.ge(0))
    max_retry_after: float = field(default=20.0, validator=validators.ge(0))
    attempt_timeout: float = field(default=60.0, validator=validators.gt(0))
    total_timeout: float = field(default=120.0, validator=validators.gt(0))


# ---- events (in) --------------------------------------------------------------------


@frozen
class AttemptFailed:
    kind: FailureKind
    retry_after: float | None = None
    detail: str = ""


@frozen
class FirstChunk:
    """The first piece of content reached the client: no fallback from here on."""


@frozen
class Completed:
    usage: Usage


@frozen
class ClientGone:
    """The client disconnected."""


@frozen
class Woke:
    """A SleepUntil ended."""


@frozen
class Halted:
    """The gateway stopped the request for a reason of its own, not the provider's or the
    client's (a settle the database could not make): it fails with `error`, and the
    attempt being made ends as "halted", not left "in_flight"."""

    error: GatewayError


Event: TypeAlias = AttemptFailed | FirstChunk | Completed | ClientGone | Woke | Halted
EVENT_TYPES: tuple[type[Event], ...] = (AttemptFailed, FirstChunk, Completed, ClientGone, Woke, Halted)

# ---- actions (out) ------------------------------------------------------------------


@frozen
class CallProvider:
    deployment: Deployment
    attempt: int  # 1-based, across the whole request
    deadline: float


@frozen
class SleepUntil:
    at: float


@frozen
class Finish:
    deployment: Deployment


@frozen
class Fail:
    error: GatewayError
    after_first_chunk: bool


Action: TypeAlias = CallProvider | SleepUntil | Finish | Fail

# ---- state --------------------------------------------------------------------------


@frozen
class AttemptRecord:
    deployment_id: str
    provider: str
    attempt: int
    started_at: float
    ended_at: float | None
    outcome: str  # "ok" | a FailureKind value | "client_gone" | "halted" | "in_flight"


@frozen
class Attempts:
    policy: AttemptPolicy
    plan: tuple[Deployment, ...]
    deadline: float  # the total deadline
    phase: Phase
    index: int = 0  # position in `plan` of the deployment being tried
    tries_here: int = 0  # calls made to plan[index]
    records: tuple[AttemptRecord, ...] = ()
    first_chunk_sent: bool = False
    last_failure: FailureKind | None = None
    last_retry_after: float | None = None
    error: GatewayError | None = None  # set when phase is failed or cancelled

    @property
    def done(self) -> bool:
        return self.phase in TERMINAL

    @property
    def current(self) -> Deployment | None:
        return self.plan[self.index] if self.index < len(self.plan) else None

    @property
    def attempts_made(self) -> int:
        return len(self.records)


Step: TypeAlias = tuple[Attempts, tuple[Action, ...]]
Handler: TypeAlias = Callable[[Attempts, Any, float], Step]

# ---- helpers ------------------------------------------------------------------------


def _moved(
    state: Attempts,
    phase: Phase,
    records: tuple[AttemptRecord, ...],
    *,
    index: int | None = None,
    tries_here: int | None = None,
    first_chunk_sent: bool | None = None,
) -> Attempts:
    """`state` in `phase` with `records` (and `index`, `tries_here`, `first_chunk_sent`
    when given): what `evolve` does for the transitions every request takes, written out,
    since `evolve` costs about five times the constructor (all of them but these use it)."""
    return Attempts(
        policy=state.policy,
        plan=state.plan,
        deadline=state.deadline,
        phase=phase,
        index=state.index if index is None else index,
        tries_here=state.tries_here if tries_here is None else tries_here,
        records=records,
        first_chunk_sent=state.first_chunk_sent if first_chunk_sent is None else first_chunk_sent,
        last_failure=state.last_failure,
        last_retry_after=state.last_retry_after,
        error=state.error,
    )


def _call(state: Attempts, index: int, now: float) -> Step:
    """Call plan[index] now: a new in-flight record and a CallProvider action."""
    deployment = state.plan[index]
    tries = state.tries_here + 1 if index == state.index else 1
    attempt = state.attempts_made + 1
    record = AttemptRecord(deployment.id, deployment.provider, attempt, now, None, "in_flight")
    records = (*state.records, record)
    new = _moved(state, Phase.CALLING, records, index=index, tries_here=tries)
    deadline = min(now + state.policy.attempt_timeout, state.deadline)
    return new, (CallProvider(deployment, attempt, deadline),)


def _close_record(state: Attempts, outcome: str, now: float) -> tuple[AttemptRecord, ...]:
    """End the in-flight record (if any) with `outcome`."""
    if not state.records or state.records[-1].outcome != "in_flight":
        return state.records
    last = state.records[-1]
    ended = AttemptRecord(last.deployment_id, last.provider, last.attempt, last.started_at, now, outcome)
    return (*state.records[:-1], ended)


def _fail(state: Attempts, error: GatewayError, phase: Phase = Phase.FAILED) -> Step:
    new = evolve(state, phase=phase, error=error)
    return new, (Fail(error, state.first_chunk_sent),)


def _short(detail: str) -> str:
    detail = " ".join(detail.split())
    return detail if len(detail) <= _DETAIL_LIMIT else detail[: _DETAIL_LIMIT - 3] + "..."


def _with_detail(message: str, detail: str) -> str:
    return f"{message}: {_short(detail)}" if detail.strip() else message


def _rejection(state: Attempts, event: AttemptFailed) -> GatewayError:
    """The error for a non-retryable failure kind."""
    provider = state.current.provider if state.current else "unknown"
    if event.kind is FailureKind.CONTEXT_LENGTH:
        return ContextLengthExceeded(
            _with_detail("The input is longer than the model's context window", event.detail),
            param="messages",
        )
    if event.kind is FailureKind.CONTENT_FILTER:
        return ContentFiltered(
            _with_detail("The provider's content filter blocked the request", event.detail)
        )
    if event.kind is FailureKind.AUTH:
        return UpstreamError(
            f"The provider '{provider}' rejected the gateway's credentials; "
            "the gateway operator must fix its provider configuration"
        )
    return UpstreamRejected(
        _with_detail(f"The provider '{provider}' rejected the request", event.detail)
    )


def _exhausted(state: Attempts) -> GatewayError:
    """The error once no attempt, time or deployment is left, matching the last kind."""
    kind = state.last_failure
    n = sum(1 for r in state.records if r.outcome != "ok")
    what = kind.value if kind else "none"
    tried = ", ".join(f"{r.deployment_id}: {r.outcome}" for r in state.records)
    message = f"{n} upstream attempt(s) failed; the last failure was: {what} (attempts: {tried})"
    if kind is FailureKind.TIMEOUT:
        return UpstreamTimeout(message)
    if kind is FailureKind.RATE_LIMITED:
        return UpstreamRateLimited(message, retry_after=state.last_retry_after)
    return UpstreamError(message)


def _time_left(state: Attempts, now: float) -> bool:
    return now < state.deadline


def _move_on(state: Attempts, now: float) -> Step:
    """Call the next deployment at once, or fail when none, no attempt or no time is left."""
    nxt = state.index + 1
    budget_left = state.attempts_made < state.policy.max_attempts
    if nxt < len(state.plan) and budget_left and _time_left(state, now):
        return _call(state, nxt, now)
    return _fail(state, _exhausted(state))


def _retry_or_move_on(state: Attempts, event: AttemptFailed, now: float) -> Step:
    policy = state.policy
    if event.retry_after is not None:
        wait = max(0.0, event.retry_after)
        usable = wait <= policy.max_retry_after
    else:
        wait = min(policy.max_backoff, policy.base_backoff * 2 ** (state.tries_here - 1))
        usable = True
    at = now + wait
    if (
        usable
        and state.tries_here <= policy.retries_per_deployment
        and state.attempts_made < policy.max_attempts
        and at < state.deadline
    ):
        return evolve(state, phase=Phase.SLEEPING), (SleepUntil(at),)
    return _move_on(state, now)


# ---- handlers: one per (phase, event type) pair in TRANSITIONS -----------------------


def _record_failure(state: Attempts, event: AttemptFailed, now: float) -> Attempts:
    records = _close_record(state, event.kind.value, now)
    return evolve(state, records=records, last_failure=event.kind,
                  last_retry_after=event.retry_after)


def _failed_while_calling(state: Attempts, event: AttemptFailed, now: float) -> Step:
    state = _record_failure(state, event, now)
    if event.kind not in RETRYABLE_KINDS:
        return _fail(state, _rejection(state, event))
    if event.kind in PROVIDER_DOWN_KINDS:
        down = frozenset(r.provider for r in state.records if r.outcome in PROVIDER_DOWN_OUTCOMES)
        state = evolve(state, plan=prefer_live(state.plan, state.index, down))
        if switch_provider(state.plan, state.index, down):
            return _move_on(state, now)
    return _retry_or_move_on(state, event, now)


def _failed_while_streaming(state: Attempts, event: AttemptFailed, now: float) -> Step:
    return _fail(_record_failure(state, event, now), UpstreamError(
        f"The provider's stream failed after the answer had started ({event.kind.value}); "
        "the answer is incomplete"
    ))


def _first_chunk(state: Attempts, event: FirstChunk, now: float) -> Step:
    return _moved(state, Phase.STREAMING, state.records, first_chunk_sent=True), ()


def _completed(state: Attempts, event: Completed, now: float) -> Step:
    deployment = state.current
    assert deployment is not None  # calling/streaming always have a current deployment
    new = _moved(state, Phase.SUCCEEDED, _close_record(state, "ok", now))
    return new, (Finish(deployment),)


def _client_gone(state: Attempts, event: ClientGone, now: float) -> Step:
    state = evolve(state, records=_close_record(state, "client_gone", now))
    return _fail(state, ClientClosed("The client closed the request"), Phase.CANCELLED)


def _halted(state: Attempts, event: Halted, now: float) -> Step:
    return _fail(evolve(state, records=_close_record(state, "halted", now)), event.error)


def _woke(state: Attempts, event: Woke, now: float) -> Step:
    if _time_left(state, now) and state.attempts_made < state.policy.max_attempts:
        return _call(state, state.index, now)
    return _fail(state, _exhausted(state))


def _ignored(state: Attempts, event: ClientGone | Halted, now: float) -> Step:
    return state, ()


TRANSITIONS: Mapping[tuple[Phase, type[Event]], Handler] = MappingProxyType(
    {
        (Phase.CALLING, AttemptFailed): _failed_while_calling,
        (Phase.CALLING, FirstChunk): _first_chunk,
        (Phase.CALLING, Completed): _completed,
        (Phase.CALLING, ClientGone): _client_gone,
        (Phase.STREAMING, AttemptFailed): _failed_while_streaming,
        (Phase.STREAMING, Completed): _completed,
        (Phase.STREAMING, ClientGone): _client_gone,
        (Phase.SLEEPING, Woke): _woke,
        (Phase.SLEEPING, ClientGone): _client_gone,
        (Phase.SUCCEEDED, ClientGone): _ignored,
        (Phase.FAILED, ClientGone): _ignored,
        (Phase.CANCELLED, ClientGone): _ignored,
        (Phase.CALLING, Halted): _halted,
        (Phase.STREAMING, Halted): _halted,
        (Phase.SLEEPING, Halted): _halted,
        (Phase.SUCCEEDED, Halted): _ignored,
        (Phase.FAILED, Halted): _ignored,
        (Phase.CANCELLED, Halted): _ignored,
    }
)

# ---- the API ------------------------------------------------------------------------


def start(deployments: tuple[Deployment, ...], policy: AttemptPolicy, now: float) -> Step:
    """Begin a request over `deployments` (in order): call the first, or fail at once."""
    state = Attempts(
        policy=policy,
        plan=tuple(deployments),
        deadline=now + policy.total_timeout,
        phase=Phase.CALLING,
    )
    if not state.plan:
        return _fail(state, NoRouteAvailable("No deployment is available for this request"))
    return _call(state, 0, now)


def step(state: Attempts, event: Event, now: float) -> Step:
    """Feed one event; returns the new state and the actions to perform, in order."""
    handler = TRANSITIONS.get((state.phase, type(event)))
    if handler is None:
        raise IllegalTransition(
            f"event {type(event).__name__} is not allowed in phase {state.phase.value}"
        )
    return handler(state, event, now)
