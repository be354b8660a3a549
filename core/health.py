"""Per-deployment health: rolling success rate, latency EWMA and a circuit breaker.

Owns: what the gateway believes about one deployment's health, as pure functions of
`(state, outcome, now, policy)`. No clock, no globals: the caller keeps the latest
`DeploymentHealth` per deployment (None = never observed) and passes `now`.

Rules:
- Only provider-side failures count. An outcome whose `kind` is the caller's fault
  (`BAD_REQUEST`, `CONTEXT_LENGTH`, `CONTENT_FILTER`) changes nothing, except that it
  releases a half-open probe (the probe got an answer, but not a verdict; another probe
  may go).
- Every counted outcome is appended to `recent` (the last `policy.window` outcomes, as
  bools) and updates `consecutive_failures`. A success with a latency updates the
  latency EWMA (`new = alpha * sample + (1 - alpha) * old`; the first sample is taken
  as is). Failure latencies are not folded in (a fast connect error is not a fast
  deployment). Negative latencies (a clock that went backwards) count as 0; non-finite
  ones are ignored.
- Circuit transitions are one table keyed by `(circuit, ok)` (see `_TRANSITIONS`):
    closed    + success -> closed
    closed    + failure -> open (opened_at = now) when `consecutive_failures >=
                 failure_threshold`, or when at least `min_samples` outcomes are in the
                 window and the failure share is >= `error_rate_threshold`; else closed
    open      + either  -> open, unchanged (late answers from calls started before the
                 circuit opened neither close it nor extend its cooldown)
    half_open + success -> closed; the window restarts from this success, so old
                 failures cannot re-trip it at once
    half_open + failure -> open with a fresh cooldown (opened_at = now)
- Availability (`available`): closed -> yes; open -> only once `cooldown` seconds have
  elapsed since `opened_at`; half_open -> only when no probe is in flight, or the probe
  in flight is stale (started `cooldown` seconds ago or more and never reported; a
  crashed caller must not wedge the deployment forever).
- `begin_probe` turns an available open / half-open circuit into half_open with a probe
  in flight (so exactly one caller probes); it is a no-op on a closed circuit and on a
  circuit that is not available. Callers may call it before every attempt.
- Time may go backwards: elapsed time is `max(0, now - then)`, so an earlier `now`
  never ends a cooldown early and never reopens or closes anything by itself.
- The machine's entry is `step(state, event, now, policy) -> (state, actions)`, in the
  style of `core.attempts` and `core.jobs`: `Observed(outcome)` is `observe`,
  `ProbeStarting()` is `begin_probe`, and the one action, `CircuitChanged(before,
  after)`, is emitted exactly when the circuit moved.
- `success_rate` is Laplace-smoothed, `(successes + 1) / (outcomes + 2)`: an unknown
  deployment ranks at 0.5, between proven good and proven bad ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Literal, TypeAlias

from attrs import evolve, field, frozen

from core.model import FailureKind

Circuit = Literal["closed", "open", "half_open"]

CALLER_FAULT_KINDS: frozenset[FailureKind] = frozenset(
    {FailureKind.BAD_REQUEST, FailureKind.CONTEXT_LENGTH, FailureKind.CONTENT_FILTER}
)


def _positive_int(instance: object, attribute: object, value: int) -> None:
    del instance
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{getattr(attribute, 'name', 'value')} must be an int >= 1")


def _unit_interval(instance: object, attribute: object, value: float) -> None:
    del instance
    if not (math.isfinite(value) and 0 < value <= 1):
        raise ValueError(f"{getattr(attribute, 'name', 'value')} must be in (0, 1]")


def _non_negative(instance: object, attribute: object, value: float) -> None:
    del instance
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{getattr(attribute, 'name', 'value')} must be finite and >= 0")


@frozen
class HealthPolicy:
    """Breaker tuning. The error-rate rule never fires when `min_samples > window`."""

    window: int = field(default=20, validator=_positive_int)  # outcomes kept
    failure_threshold: int = field(default=5, validator=_positive_int)  # consecutive
    error_rate_threshold: float = field(default=0.5, validator=_unit_interval)
    min_samples: int = field(default=10, validator=_positive_int)
    cooldown: float = field(default=30.0, validator=_non_negative)  # seconds
    latency_alpha: float = field(default=0.2, validator=_unit_interval)  # EWMA weight


@frozen
class Outcome:
    """How one call ended. `kind` matters only when `ok` is False (None: unclassified)."""

    ok: bool
    latency: float | None  # seconds
    kind: FailureKind | None = None


@frozen
class DeploymentHealth:
    recent: tuple[bool, ...] = ()  # oldest first, at most policy.window long
    consecutive_failures: int = 0
    latency_ewma: float | None = None  # seconds; None until a success reported one
    circuit: Circuit = "closed"
    opened_at: float | None = None  # when the circuit last opened (None: never)
    probe_started_at: float | None = None  # set while a half-open probe is in flight

    @property
    def probe_in_flight(self) -> bool:
        return self.probe_started_at is not None


INITIAL = DeploymentHealth()


def _elapsed(since: float | None, now: float) -> float:
    return math.inf if since is None else max(0.0, now - since)


# ---- recording an outcome --------------------------------------------------------------


def _ewma(old: float | None, sample: float | None, alpha: float) -> float | None:
    if sample is None or not math.isfinite(sample):
        return old
    sample = max(0.0, sample)
    return sample if old is None else alpha * sample + (1 - alpha) * old


def _record(state: DeploymentHealth, outcome: Outcome, policy: HealthPolicy) -> DeploymentHealth:
    # every field given (what `evolve` does, without looking the fields up on every call)
    return DeploymentHealth(
        recent=(*state.recent, outcome.ok)[-policy.window :],
        consecutive_failures=0 if outcome.ok else state.consecutive_failures + 1,
        latency_ewma=(
            _ewma(state.latency_ewma, outcome.latency, policy.latency_alpha)
            if outcome.ok
            else state.latency_ewma
        ),
        circuit=state.circuit,
        opened_at=state.opened_at,
        probe_started_at=state.probe_started_at,
    )


# ---- circuit transitions: one table keyed by (circuit, ok) -----------------------------

Transition: TypeAlias = Callable[[DeploymentHealth, float, HealthPolicy], DeploymentHealth]


def _stay(state: DeploymentHealth, now: float, policy: HealthPolicy) -> DeploymentHealth:
    return state


def _open(state: DeploymentHealth, now: float, policy: HealthPolicy) -> DeploymentHealth:
    return evolve(state, circuit="open", opened_at=now, probe_started_at=None)


def _close(state: DeploymentHealth, now: float, policy: HealthPolicy) -> DeploymentHealth:
    return evolve(
        state, circuit="closed", recent=state.recent[-1:], consecutive_failures=0,
        probe_started_at=None,
    )


def _tripped(state: DeploymentHealth, policy: HealthPolicy) -> bool:
    if state.consecutive_failures >= policy.failure_threshold:
        return True
    n = len(state.recent)
    return n >= policy.min_samples and state.recent.count(False) / n >= policy.error_rate_threshold


def _open_if_tripped(state: DeploymentHealth, now: float, policy: HealthPolicy) -> DeploymentHealth:
    return _open(state, now, policy) if _tripped(state, policy) else state


_TRANSITIONS: dict[tuple[Circuit, bool], Transition] = {
    ("closed", True): _stay,
    ("closed", False): _open_if_tripped,
    ("open", True): _stay,
    ("open", False): _stay,
    ("half_open", True): _close,
    ("half_open", False): _open,
}


# ---- the public functions ----------------------------------------------------------------


def counts(outcome: Outcome) -> bool:
    """Whether the outcome says anything about the deployment (not the caller's fault)."""
    return outcome.ok or outcome.kind not in CALLER_FAULT_KINDS


def observe(
    state: DeploymentHealth | None, outcome: Outcome, now: float, policy: HealthPolicy
) -> DeploymentHealth:
    """The health after `outcome` was observed at `now` (see the module rules)."""
    current = INITIAL if state is None else state
    if not counts(outcome):
        if current.circuit == "half_open":
            return evolve(current, probe_started_at=None)
        return current
    recorded = _record(current, outcome, policy)
    return _TRANSITIONS[(current.circuit, outcome.ok)](recorded, now, policy)


def available(state: DeploymentHealth | None, now: float, policy: HealthPolicy) -> bool:
    """Whether a call may go to the deployment now (closed, or one probe allowed)."""
    if state is None or state.circuit == "closed":
        return True
    if state.circuit == "open":
        return _elapsed(state.opened_at, now) >= policy.cooldown
    return _elapsed(state.probe_started_at, now) >= policy.cooldown


def begin_probe(
    state: DeploymentHealth | None, now: float, policy: HealthPolicy
) -> DeploymentHealth:
    """Mark a half-open probe in flight; a no-op when closed or when no probe is allowed."""
    current = INITIAL if state is None else state
    if current.circuit == "closed" or not available(current, now, policy):
        return current
    return evolve(current, circuit="half_open", probe_started_at=now)


def success_rate(state: DeploymentHealth | None) -> float:
    """Laplace-smoothed share of successes in the window; 0.5 for an unknown deployment."""
    if state is None:
        return 0.5
    return (state.recent.count(True) + 1) / (len(state.recent) + 2)


def latency(state: DeploymentHealth | None) -> float | None:
    """The latency EWMA in seconds, or None when no success has reported one."""
    return None if state is None else state.latency_ewma


# ---- the machine: step(state, event, now, policy) -> (state, actions) -------------------


@frozen
class Observed:
    """A call to the deployment ended with `outcome`."""

    outcome: Outcome


@frozen
class ProbeStarting:
    """A call is about to go to the deployment (a half-open circuit lets one probe)."""


HealthEvent: TypeAlias = Observed | ProbeStarting


@frozen
class CircuitChanged:
    """The circuit moved (for the operator: logs, metrics)."""

    before: Circuit
    after: Circuit


HealthAction: TypeAlias = CircuitChanged


def _on_observed(
    state: DeploymentHealth | None, event: Observed, now: float, policy: HealthPolicy
) -> DeploymentHealth:
    return observe(state, event.outcome, now, policy)


def _on_probe(
    state: DeploymentHealth | None, event: ProbeStarting, now: float, policy: HealthPolicy
) -> DeploymentHealth:
    return begin_probe(state, now, policy)


_EVENTS: Mapping[type, Callable[..., DeploymentHealth]] = MappingProxyType(
    {Observed: _on_observed, ProbeStarting: _on_probe}
)


def step(
    state: DeploymentHealth | None, event: HealthEvent, now: float, policy: HealthPolicy
) -> tuple[DeploymentHealth, tuple[HealthAction, ...]]:
    """The machine's one entry, in the style of `attempts.step` and `jobs.step`: the new
    state, and a `CircuitChanged` action when the circuit moved."""
    before = (INITIAL if state is None else state).circuit
    after = _EVENTS[type(event)](state, event, now, policy)
    changed = () if after.circuit == before else (CircuitChanged(before, after.circuit),)
    return after, changed
