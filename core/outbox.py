"""The webhook outbox: which messages a job change announces, and one delivery's lifecycle.

Owns: two decisions, both pure (`now` is an argument, epoch seconds as the job times):

1. What a job's change announces (`announced(...)`), by the job's
   `webhook_events_filter` (Replicate's names; none given means `("completed",)`):
   - `start`: the job's first run started (its `started_at` went from unset to set);
   - `output`: the job's output was stored (its `result` went from unset to set);
   - `completed`: the job reached a terminal status (succeeded, failed, canceled,
     aborted).
   Each message has one id, `message_id(job_id, event, status)`: `msg_<job>_start`,
   `msg_<job>_output`, `msg_<job>_<terminal status>`. It is the `webhook-id` of every
   attempt, and the outbox row's primary key, so a message is enqueued at most once
   however many processes see the change.

2. A delivery's lifecycle, as a table of transitions keyed by (status, event type):
   pending -> sending -> delivered | gone | refused | given_up (the last four terminal).
   - Claim(worker): pending with next_at <= now -> sending, attempts + 1, leased to
     `worker` until now + lease. Sending with a dead lease (its sender died mid-attempt):
     the lost attempt counts as failed; when the schedule allows another -> sending under
     the new worker (attempts + 1), else given_up ("lease expired"). Anything else raises
     `NotClaimable`. So one attempt is made by exactly one lease holder.
   - Delivered(worker) (a 2xx): -> delivered. Gone(worker) (410: the receiver asked us to
     stop) -> gone. Refused(worker, reason) (the target broke the SSRF rules) -> refused,
     never retried.
   - Failed(worker, error) (any other answer, a transport error): -> pending with
     next_at = now + the policy's delay after `attempts` failures, or given_up when the
     schedule is spent. So a message gets at most `1 + len(retry_delays)` attempts.
   - Reports (Delivered, Gone, Refused, Failed) from anyone but the lease owner of a
     sending delivery raise `LeaseLost` (a reclaimed attempt's late report is dropped).
   - Terminal deliveries never change: every event returns the same state object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Literal, TypeAlias

from attrs import evolve, field, frozen

from core.errors import Conflict
from core.webhooks import RETRY_DELAYS

EVENTS: tuple[str, ...] = ("start", "output", "completed")
DEFAULT_EVENTS: tuple[str, ...] = ("completed",)
JOB_TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})

DeliveryStatus = Literal["pending", "sending", "delivered", "gone", "refused", "given_up"]
STATUSES: tuple[DeliveryStatus, ...] = (
    "pending", "sending", "delivered", "gone", "refused", "given_up",
)
TERMINAL: frozenset[DeliveryStatus] = frozenset({"delivered", "gone", "refused", "given_up"})
LEASE_EXPIRED = "lease expired"


class NotClaimable(Conflict):
    code = "delivery_not_claimable"


class LeaseLost(Conflict):
    code = "delivery_lease_lost"


# ---- what a job change announces ---------------------------------------------------------


def events_filter(value: object) -> tuple[str, ...] | str:
    """The filter as given in a job request (a non-empty list of event names, each once),
    or the reason it is not one."""
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of 'start', 'output', 'completed'"
    for name in value:
        if name not in EVENTS:
            return f"has an unknown event {name!r} (known: 'start', 'output', 'completed')"
    if len(set(value)) != len(value):
        return "names an event twice"
    return tuple(value)


def message_id(job_id: str, event: str, status: str) -> str:
    return f"msg_{job_id}_{status if event == 'completed' else event}"


@frozen
class JobChange:
    """The parts of a job's change that announcements depend on."""

    status_before: str
    status_after: str
    started_before: bool
    started_after: bool
    result_before: bool
    result_after: bool


def announced(change: JobChange, wanted: Iterable[str] | None) -> tuple[str, ...]:
    """The events (in EVENTS order) this change announces, among the `wanted` ones."""
    chosen = frozenset(DEFAULT_EVENTS if wanted is None else wanted)
    happened = {
        "start": change.started_after and not change.started_before,
        "output": change.result_after and not change.result_before,
        "completed": change.status_after in JOB_TERMINAL
        and change.status_before not in JOB_TERMINAL,
    }
    return tuple(e for e in EVENTS if happened[e] and e in chosen)


# ---- one delivery's lifecycle ------------------------------------------------------------


def _delays(value: Iterable[float]) -> tuple[float, ...]:
    delays = tuple(float(d) for d in value)
    if any(not d >= 0 for d in delays):
        raise ValueError("retry delays must be >= 0 seconds")
    return delays


def _positive(instance: object, attribute: object, value: float) -> None:
    del instance
    if not value > 0:
        raise ValueError(f"{getattr(attribute, 'name', '?')} must be > 0, got {value!r}")


@frozen
class DeliveryPolicy:
    # longer than one attempt can take (resolution + the 15 s request timeout)
    lease_seconds: float = field(default=60.0, validator=_positive)
    retry_delays: tuple[float, ...] = field(default=RETRY_DELAYS, converter=_delays)

    @property
    def max_attempts(self) -> int:
        return 1 + len(self.retry_delays)

    def delay_after(self, failures: int) -> float | None:
        """Seconds before the next attempt after `failures` failed ones; None: give up."""
        if failures < 1:
            raise ValueError("failures counts failed attempts and starts at 1")
        return self.retry_delays[failures - 1] if failures <= len(self.retry_delays) else None


@frozen
class DeliveryState:
    status: DeliveryStatus
    attempts: int = 0
    next_at: float = 0.0
    lease_owner: str | None = None
    lease_expires: float | None = None
    last_error: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown delivery status {self.status!r}")
        if self.attempts < 0:
            raise ValueError("attempts must be >= 0")
        leased = self.lease_owner is not None and self.lease_expires is not None
        unleased = self.lease_owner is None and self.lease_expires is None
        if (self.status == "sending" and not leased) or (self.status != "sending" and not unleased):
            raise ValueError("exactly the sending deliveries hold a lease")


@frozen
class Claim:
    worker: str


@frozen
class Delivered:
    worker: str


@frozen
class Gone:
    worker: str


@frozen
class Refused:
    worker: str
    reason: str


@frozen
class Failed:
    worker: str
    error: str


DeliveryEvent: TypeAlias = Claim | Delivered | Gone | Refused | Failed
EVENT_TYPES: tuple[type[DeliveryEvent], ...] = (Claim, Delivered, Gone, Refused, Failed)


def claimable(state: DeliveryState, now: float) -> bool:
    """What the storage "next delivery" query mirrors."""
    if state.status == "pending":
        return state.next_at <= now
    return state.status == "sending" and state.lease_expires is not None and state.lease_expires < now


def _owner(state: DeliveryState, event: DeliveryEvent) -> None:
    if state.status != "sending" or state.lease_owner != event.worker:
        raise LeaseLost(f"worker {event.worker!r} does not hold this delivery")


def _ended(state: DeliveryState, status: DeliveryStatus, error: str | None) -> DeliveryState:
    return evolve(state, status=status, lease_owner=None, lease_expires=None, last_error=error)


Handler: TypeAlias = Callable[[DeliveryState, DeliveryEvent, float, DeliveryPolicy], DeliveryState]


def _claim(state: DeliveryState, event: DeliveryEvent, now: float, policy: DeliveryPolicy) -> DeliveryState:
    assert isinstance(event, Claim)
    if not claimable(state, now):
        raise NotClaimable(f"delivery is {state.status} and not due")
    error = state.last_error
    if state.status == "sending":  # the previous sender died mid-attempt
        error = LEASE_EXPIRED
        if policy.delay_after(state.attempts) is None:
            return _ended(state, "given_up", LEASE_EXPIRED)
    return evolve(state, status="sending", attempts=state.attempts + 1, lease_owner=event.worker,
                  lease_expires=now + policy.lease_seconds, last_error=error)


def _delivered(state: DeliveryState, event: DeliveryEvent, now: float, policy: DeliveryPolicy) -> DeliveryState:
    del now, policy
    _owner(state, event)
    return _ended(state, "delivered" if isinstance(event, Delivered) else "gone", None)


def _refused(state: DeliveryState, event: DeliveryEvent, now: float, policy: DeliveryPolicy) -> DeliveryState:
    del now, policy
    assert isinstance(event, Refused)
    _owner(state, event)
    return _ended(state, "refused", event.reason)


def _failed(state: DeliveryState, event: DeliveryEvent, now: float, policy: DeliveryPolicy) -> DeliveryState:
    assert isinstance(event, Failed)
    _owner(state, event)
    delay = policy.delay_after(state.attempts)
    if delay is None:
        return _ended(state, "given_up", event.error)
    return evolve(_ended(state, "pending", event.error), next_at=now + delay)


def _not_owned(state: DeliveryState, event: DeliveryEvent, now: float, policy: DeliveryPolicy) -> DeliveryState:
    del now, policy
    _owner(state, event)  # always raises: a pending delivery has no owner
    return state


def _unchanged(state: DeliveryState, event: DeliveryEvent, now: float, policy: DeliveryPolicy) -> DeliveryState:
    del event, now, policy
    return state


def _table() -> dict[tuple[DeliveryStatus, type[DeliveryEvent]], Handler]:
    table: dict[tuple[DeliveryStatus, type[DeliveryEvent]], Handler] = {
        ("pending", Claim): _claim,
        ("pending", Delivered): _not_owned,
        ("pending", Gone): _not_owned,
        ("pending", Refused): _not_owned,
        ("pending", Failed): _not_owned,
        ("sending", Claim): _claim,
        ("sending", Delivered): _delivered,
        ("sending", Gone): _delivered,
        ("sending", Refused): _refused,
        ("sending", Failed): _failed,
    }
    for status in TERMINAL:
        table.update({(status, kind): _unchanged for kind in EVENT_TYPES})
    return table


TRANSITIONS: Mapping[tuple[DeliveryStatus, type[DeliveryEvent]], Handler] = MappingProxyType(_table())


def step(state: DeliveryState, event: DeliveryEvent, now: float, policy: DeliveryPolicy) -> DeliveryState:
    """The delivery's next state; raises `NotClaimable` / `LeaseLost` (409s, lost races)."""
    return TRANSITIONS[(state.status, type(event))](state, event, now, policy)
