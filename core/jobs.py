"""The lifecycle of one async job: claims, leases, retries with backoff, deadlines, cancel.

Owns: every status change of a job, as a pure machine `step(state, event, now, policy)
-> (JobState, actions)` over a frozen `JobState`, in the style of `core.attempts` and
`core.health`. No clock: `now` is the caller's (storage keeps these times as epoch
seconds). Actions: `RunJob(worker)` when a Claim starts a run, `Announce(status)` when
an event ends the job; `apply` is the state alone. The storage layer applies it inside a
transaction holding the job's row lock, and its "next job" query mirrors `claimable`.

Statuses (the public API names): queued -> running -> succeeded | failed | canceled, and
queued -> aborted. `succeeded`, `failed`, `canceled` and `aborted` are terminal.

Invariants (checked when a `JobState` is built):
- a running job always has a lease (`lease_owner` and `lease_expires` set); every other
  status has none;
- `0 <= attempts`; the machine never makes `attempts` exceed `policy.max_attempts`.

Rules (the table `TRANSITIONS`, keyed by (status, event type)):
- `attempts` counts the runs started: every successful Claim adds one.
- Deadlines: a job whose deadline passes before any run started is `aborted` (it was
  never run, so never billed); one that had started (running, or queued for a retry) is
  `canceled`, both with error "deadline exceeded". The runner also cancels its model
  call when the deadline comes (then a Heartbeat applies this rule to the row).
- Claim(worker):
    at or past the deadline            -> aborted / canceled "deadline exceeded"
    queued, run_after <= now           -> running, leased to `worker` until now + lease
    running, lease_expires < now       -> reclaimed: running under the new worker,
                                          attempts + 1; when no attempt is left, failed
                                          "lease expired" instead
    otherwise (not yet due / lease live) -> raises `NotClaimable`
  A run that starts clears `error` (a failed previous try's error is kept while queued).
  (A queued job never has attempts == max_attempts when built by this machine; one
  built that way by hand fails "attempts exhausted" on Claim.)
- Heartbeat(worker): only the lease owner may extend its lease (to
  max(lease_expires, now + lease): a clock going backwards never shortens it). Anyone else,
  or a heartbeat on a queued job, raises `LeaseLost`. A heartbeat at or past the deadline
  cancels the job "deadline exceeded" (the runner sees the status and stops).
- Succeed(worker): owner only (else `LeaseLost`) -> succeeded. An owner whose lease
  ran out but was not yet reclaimed still wins: nobody else has the job. Finishing after
  the deadline still counts as success (the work is done).
- Fail(worker, retryable, error): owner only (else `LeaseLost`). Retryable with
  attempts < max_attempts and the retry due before the deadline -> queued with run_after
  = now + min(max_backoff, base_backoff * 2 ** (attempts - 1)) (no jitter: the caller's
  claim order already spreads workers). Otherwise -> failed with `error`.
- Cancel(): queued or running -> canceled at once, `cancel_requested` set, lease
  dropped. The runner of a canceled running job learns it from its next Heartbeat (which
  returns the canceled state) and stops; its late Succeed / Fail are ignored.
- ExpireLease() (the sweeper): running with lease_expires < now -> queued with
  run_after = now when an attempt is left and the deadline is not reached; else failed
  ("lease expired") or canceled ("deadline exceeded"). On a live lease or a queued job:
  unchanged.
- Terminal states never change: every event on them returns the very same state object
  (no marker, no error), so Cancel is idempotent and late reports from runners are
  harmless. Callers that care test `is_terminal(result.status)`.
- A job the machine itself ends (Claim, Heartbeat, ExpireLease: no runner reported) is
  described to clients by `machine_error(state)`: `job_deadline_exceeded` or
  `job_attempts_exhausted`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Literal, TypeAlias

from attrs import evolve, field, frozen

from core.errors import Conflict, GatewayError

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled", "aborted"]
STATUSES: tuple[JobStatus, ...] = (
    "queued", "running", "succeeded", "failed", "canceled", "aborted",
)
TERMINAL: frozenset[JobStatus] = frozenset({"succeeded", "failed", "canceled", "aborted"})

DEADLINE_EXCEEDED = "deadline exceeded"
LEASE_EXPIRED = "lease expired"
ATTEMPTS_EXHAUSTED = "attempts exhausted"


class JobConflict(Conflict):
    """A worker's event does not fit the job's current state (a lost race, not a bug)."""

    code = "job_conflict"


class LeaseLost(JobConflict):
    """The worker no longer holds the job's lease: stop working on it, report nothing."""

    code = "lease_lost"


class NotClaimable(JobConflict):
    """The job is not due yet, or another worker's lease on it is still live."""

    code = "job_not_claimable"


class JobAttemptsExhausted(GatewayError):
    """Every run the policy allows was started and none finished (each worker stopped
    heartbeating: it crashed, was killed, or the process stopped)."""

    code = "job_attempts_exhausted"


class JobDeadlineExceeded(GatewayError):
    """The job's deadline passed before a run could finish it."""

    status = 504
    code = "job_deadline_exceeded"


def _positive(instance: object, attribute: object, value: float) -> None:
    del instance
    if not value > 0:
        raise ValueError(f"{getattr(attribute, 'name', '?')} must be > 0, got {value!r}")


def _at_least_one(instance: object, attribute: object, value: int) -> None:
    del instance
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{getattr(attribute, 'name', '?')} must be an int >= 1")


@frozen
class JobPolicy:
    lease_seconds: float = field(default=30.0, validator=_positive)
    max_attempts: int = field(default=3, validator=_at_least_one)
    base_backoff: float = field(default=2.0, validator=_positive)
    max_backoff: float = field(default=60.0, validator=_positive)


@frozen
class JobState:
    status: JobStatus
    attempts: int = 0
    run_after: float = 0.0
    lease_owner: str | None = None
    lease_expires: float | None = None
    deadline: float | None = None
    error: str | None = None
    cancel_requested: bool = False

    def __attrs_post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown job status {self.status!r}")
        if self.attempts < 0:
            raise ValueError("attempts must be >= 0")
        leased = self.lease_owner is not None and self.lease_expires is not None
        unleased = self.lease_owner is None and self.lease_expires is None
        if self.status == "running" and not leased:
            raise ValueError("a running job must have a lease owner and expiry")
        if self.status != "running" and not unleased:
            raise ValueError(f"a {self.status} job cannot hold a lease")


def new_job(now: float, *, deadline: float | None = None, run_after: float | None = None) -> JobState:
    """A freshly queued job, claimable from `run_after` (default: `now`)."""
    return JobState(status="queued", run_after=now if run_after is None else run_after,
                    deadline=deadline)


# ---- events -----------------------------------------------------------------------------


@frozen
class Claim:
    worker: str


@frozen
class Heartbeat:
    worker: str


@frozen
class Succeed:
    worker: str


@frozen
class Fail:
    worker: str
    retryable: bool
    error: str


@frozen
class Cancel:
    pass


@frozen
class ExpireLease:
    pass


JobEvent: TypeAlias = Claim | Heartbeat | Succeed | Fail | Cancel | ExpireLease
EVENT_TYPES: tuple[type[JobEvent], ...] = (Claim, Heartbeat, Succeed, Fail, Cancel, ExpireLease)


# ---- helpers ----------------------------------------------------------------------------


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def claimable(state: JobState, now: float) -> bool:
    """What the storage "next job" query mirrors: due and queued, or running with a dead lease."""
    if state.status == "queued":
        return state.run_after <= now
    if state.status == "running":
        return state.lease_expires is not None and state.lease_expires < now
    return False


def backoff(attempts: int, policy: JobPolicy) -> float:
    """Delay before the retry that follows `attempts` runs: capped exponential."""
    exponent = max(0, attempts - 1)
    if exponent > 62:  # 2**63 * anything positive is beyond any sane cap
        return policy.max_backoff
    return float(min(policy.max_backoff, policy.base_backoff * 2**exponent))


def machine_error(state: JobState, policy: JobPolicy) -> GatewayError:
    """What a client is told about a job this machine failed on its own (not via Fail)."""
    if state.error == DEADLINE_EXCEEDED:
        return JobDeadlineExceeded("The job's deadline passed before it could finish")
    return JobAttemptsExhausted(
        f"The job was not finished after {state.attempts} attempt(s) (max_attempts ="
        f" {policy.max_attempts}); its last worker stopped without reporting ({state.error})"
    )


def _past_deadline(state: JobState, now: float) -> bool:
    return state.deadline is not None and now >= state.deadline


def _lease_dead(state: JobState, now: float) -> bool:
    return state.lease_expires is not None and state.lease_expires < now


def _failed(state: JobState, error: str) -> JobState:
    return evolve(state, status="failed", lease_owner=None, lease_expires=None, error=error)


def _timed_out(state: JobState) -> JobState:
    """Past the deadline: aborted when no run ever started, else canceled."""
    status: JobStatus = "aborted" if state.attempts == 0 else "canceled"
    return evolve(state, status=status, lease_owner=None, lease_expires=None,
                  error=DEADLINE_EXCEEDED)


def _require_owner(state: JobState, worker: str) -> None:
    if state.status != "running" or state.lease_owner != worker:
        raise LeaseLost(f"worker {worker!r} does not hold the lease on this job")


def _start(state: JobState, worker: str, now: float, policy: JobPolicy) -> JobState:
    if state.attempts >= policy.max_attempts:
        return _failed(state, LEASE_EXPIRED if state.status == "running" else ATTEMPTS_EXHAUSTED)
    return evolve(state, status="running", attempts=state.attempts + 1, lease_owner=worker,
                  lease_expires=now + policy.lease_seconds, error=None)


# ---- transitions ------------------------------------------------------------------------

Handler: TypeAlias = Callable[[JobState, JobEvent, float, JobPolicy], JobState]


def _claim(state: JobState, event: JobEvent, now: float, policy: JobPolicy) -> JobState:
    assert isinstance(event, Claim)
    if _past_deadline(state, now):
        return _timed_out(state)
    if not claimable(state, now):
        raise NotClaimable(f"job is {state.status} and not claimable yet")
    return _start(state, event.worker, now, policy)


def _heartbeat(state: JobState, event: JobEvent, now: float, policy: JobPolicy) -> JobState:
    assert isinstance(event, Heartbeat)
    _require_owner(state, event.worker)
    if _past_deadline(state, now):
        return _timed_out(state)
    assert state.lease_expires is not None
    return evolve(state, lease_expires=max(state.lease_expires, now + policy.lease_seconds))


def _not_leased(state: JobState, event: JobEvent, now: float, policy: JobPolicy) -> JobState:
    del now, policy
    assert isinstance(event, Heartbeat | Succeed | Fail)
    _require_owner(state, event.worker)  # always raises on a queued job
    return state


def _succeed(state: JobState, event: JobEvent, now: float, policy: JobPolicy) -> JobState:
    del now, policy
    assert isinstance(event, Succeed)
    _require_owner(state, event.worker)
    return evolve(state, status="succeeded", lease_owner=None, lease_expires=None, error=None)


def _fail(state: JobState, event: JobEvent, now: float, policy: JobPolicy) -> JobState:
    assert isinstance(event, Fail)
    _require_owner(state, event.worker)
    run_after = now + backoff(state.attempts, policy)
    in_time = state.deadline is None or run_after < state.deadline
    if event.retryable and state.attempts < policy.max_attempts and in_time:
        return evolve(state, status="queued", run_after=run_after, lease_owner=None,
                      lease_expires=None, error=event.error)
    return _failed(state, event.error)


def _cancel(state: JobState, event: JobEvent, now: float, policy: JobPolicy) -> JobState:
    del event, now, policy
    return evolve(state, status="canceled", lease_owner=None, lease_expires=None,
                  cancel_requested=True)


def _expire(state: JobState, event: JobEvent, now: float, policy: JobPolicy) -> JobState:
    assert isinstance(event, ExpireLease)
    if not _lease_dead(state, now):
        return state
    if _past_deadline(state, now):
        return _timed_out(state)
    if state.attempts >= policy.max_attempts:
        return _failed(state, LEASE_EXPIRED)
    return evolve(state, status="queued", run_after=now, lease_owner=None,
                  lease_expires=None, error=LEASE_EXPIRED)


def _unchanged(state: JobState, event: JobEvent, now: float, policy: JobPolicy) -> JobState:
    del event, now, policy
    return state


def _table() -> dict[tuple[JobStatus, type[JobEvent]], Handler]:
    table: dict[tuple[JobStatus, type[JobEvent]], Handler] = {
        ("queued", Claim): _claim,
        ("queued", Heartbeat): _not_leased,
        ("queued", Succeed): _not_leased,
        ("queued", Fail): _not_leased,
        ("queued", Cancel): _cancel,
        ("queued", ExpireLease): _unchanged,
        ("running", Claim): _claim,
        ("running", Heartbeat): _heartbeat,
        ("running", Succeed): _succeed,
        ("running", Fail): _fail,
        ("running", Cancel): _cancel,
        ("running", ExpireLease): _expire,
    }
    for status in STATUSES:  # terminal states: every event leaves them as they are
        if status in TERMINAL:
            table.update({(status, kind): _unchanged for kind in EVENT_TYPES})
    return table


TRANSITIONS: Mapping[tuple[JobStatus, type[JobEvent]], Handler] = MappingProxyType(_table())


# ---- actions: what the job runner must do after a step ----------------------------------


@frozen
class RunJob:
    """This Claim started a run: `worker` now runs the job under its lease."""

    worker: str


@frozen
class Announce:
    """This event ended the job (it reached `status`, a terminal one): tell its webhook."""

    status: JobStatus


JobAction: TypeAlias = RunJob | Announce


def step(
    state: JobState, event: JobEvent, now: float, policy: JobPolicy
) -> tuple[JobState, tuple[JobAction, ...]]:
    """The job's next state and the actions it asks for. Raises `LeaseLost` /
    `NotClaimable` (both `Conflict`, 409)."""
    new = TRANSITIONS[(state.status, type(event))](state, event, now, policy)
    actions: list[JobAction] = []
    if isinstance(event, Claim) and new.status == "running" and new is not state:
        actions.append(RunJob(event.worker))
    if new.status in TERMINAL and state.status not in TERMINAL:
        actions.append(Announce(new.status))
    return new, tuple(actions)


def apply(state: JobState, event: JobEvent, now: float, policy: JobPolicy) -> JobState:
    """`step`'s state alone, for storage: it applies a transition inside the row's lock
    and returns the row, from which the runner reads what to do (running: run it;
    terminal: announce it), the same decisions as `step`'s actions."""
    return step(state, event, now, policy)[0]
