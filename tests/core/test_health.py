"""core.health: breaker transitions, availability, smoothing, and a stateful model test."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from core.health import (
    CALLER_FAULT_KINDS,
    CircuitChanged,
    DeploymentHealth,
    HealthPolicy,
    Observed,
    Outcome,
    ProbeStarting,
    available,
    begin_probe,
    latency,
    observe,
    step,
    success_rate,
)
from core.model import FailureKind

POLICY = HealthPolicy()
OK = Outcome(ok=True, latency=0.1)
FAIL = Outcome(ok=False, latency=1.0, kind=FailureKind.SERVER_ERROR)


def run(outcomes: list[Outcome], now: float = 0.0, policy: HealthPolicy = POLICY) -> DeploymentHealth:
    state: DeploymentHealth | None = None
    for o in outcomes:
        state = observe(state, o, now, policy)
    assert state is not None
    return state


def opened(at: float = 100.0) -> DeploymentHealth:
    state = run([FAIL] * POLICY.failure_threshold, now=at)
    assert state.circuit == "open"
    return state


# ---- the breaker --------------------------------------------------------------------------


def test_unknown_deployment_is_available_and_ranks_mid_way() -> None:
    assert available(None, 0.0, POLICY)
    assert success_rate(None) == 0.5
    assert latency(None) is None


def test_opens_after_n_consecutive_failures_not_before() -> None:
    almost = run([OK] * 15 + [FAIL] * (POLICY.failure_threshold - 1), now=5.0)
    assert almost.circuit == "closed"
    assert almost.consecutive_failures == POLICY.failure_threshold - 1
    state = observe(almost, FAIL, 5.0, POLICY)
    assert state.circuit == "open"
    assert state.opened_at == 5.0
    assert not available(state, 5.0, POLICY)


def test_success_resets_the_consecutive_count() -> None:
    state = run([FAIL, FAIL, FAIL, FAIL, OK, FAIL, FAIL, FAIL, FAIL])
    assert state.circuit == "closed"
    assert state.consecutive_failures == 4


def test_opens_on_error_rate_over_the_window_with_enough_samples() -> None:
    policy = HealthPolicy(failure_threshold=100, min_samples=10, error_rate_threshold=0.5)
    # alternating: never two failures in a row, but half of the window failed
    nine = run([FAIL, OK] * 4 + [FAIL], policy=policy)
    assert nine.circuit == "closed"  # 5/9 failed, but fewer than min_samples
    assert observe(nine, OK, 0.0, policy).circuit == "closed"  # a success never trips
    ten = observe(nine, FAIL, 0.0, policy)
    assert ten.circuit == "open"  # 6/10 >= 0.5


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [(0.0, False), (29.999, False), (30.0, True), (1000.0, True), (-50.0, False)],
)
def test_open_is_unavailable_until_the_cooldown_elapses(elapsed: float, expected: bool) -> None:
    state = opened(at=100.0)
    assert available(state, 100.0 + elapsed, POLICY) is expected


def test_half_open_allows_exactly_one_probe() -> None:
    state = opened(at=100.0)
    assert begin_probe(state, 110.0, POLICY) == state  # still cooling down: no-op
    probing = begin_probe(state, 130.0, POLICY)
    assert probing.circuit == "half_open"
    assert probing.probe_in_flight
    assert not available(probing, 130.0, POLICY)
    assert not available(probing, 159.0, POLICY)
    assert begin_probe(probing, 131.0, POLICY) == probing  # a second probe is refused


def test_probe_success_closes_and_restarts_the_window() -> None:
    probing = begin_probe(opened(at=100.0), 130.0, POLICY)
    closed = observe(probing, OK, 131.0, POLICY)
    assert closed.circuit == "closed"
    assert not closed.probe_in_flight
    assert closed.consecutive_failures == 0
    assert closed.recent == (True,)
    assert available(closed, 131.0, POLICY)
    assert observe(closed, FAIL, 132.0, POLICY).circuit == "closed"  # no instant re-trip


def test_probe_failure_reopens_with_a_fresh_cooldown() -> None:
    probing = begin_probe(opened(at=100.0), 130.0, POLICY)
    reopened = observe(probing, FAIL, 140.0, POLICY)
    assert reopened.circuit == "open"
    assert reopened.opened_at == 140.0
    assert not reopened.probe_in_flight
    assert not available(reopened, 169.0, POLICY)
    assert available(reopened, 170.0, POLICY)


def test_a_stale_probe_frees_the_deployment_after_a_cooldown() -> None:
    probing = begin_probe(opened(at=100.0), 130.0, POLICY)
    assert not available(probing, 159.9, POLICY)
    assert available(probing, 160.0, POLICY)
    again = begin_probe(probing, 160.0, POLICY)
    assert again.probe_started_at == 160.0


def test_late_outcomes_while_open_change_neither_circuit_nor_cooldown() -> None:
    state = opened(at=100.0)
    for o in (OK, FAIL, OK):
        state = observe(state, o, 110.0, POLICY)
        assert state.circuit == "open"
        assert state.opened_at == 100.0


def test_caller_fault_kinds_are_exactly_the_callers_mistakes() -> None:
    assert CALLER_FAULT_KINDS == {
        FailureKind.BAD_REQUEST, FailureKind.CONTEXT_LENGTH, FailureKind.CONTENT_FILTER
    }


@pytest.mark.parametrize("kind", sorted(CALLER_FAULT_KINDS, key=str))
def test_caller_faults_do_not_count(kind: FailureKind) -> None:
    state = run([Outcome(ok=False, latency=0.5, kind=kind)] * 50)
    assert state == DeploymentHealth()
    assert available(state, 0.0, POLICY)


def test_a_caller_fault_releases_the_probe_without_a_verdict() -> None:
    probing = begin_probe(opened(at=100.0), 130.0, POLICY)
    answered = observe(probing, Outcome(False, 0.2, FailureKind.BAD_REQUEST), 131.0, POLICY)
    assert answered.circuit == "half_open"
    assert not answered.probe_in_flight
    assert available(answered, 131.0, POLICY)


@pytest.mark.parametrize("kind", [FailureKind.AUTH, FailureKind.TIMEOUT, None])
def test_provider_side_failures_count(kind: FailureKind | None) -> None:
    assert run([Outcome(False, None, kind)] * 5).circuit == "open"


def test_time_going_backwards_does_not_end_a_cooldown() -> None:
    state = opened(at=100.0)
    assert not available(state, 50.0, POLICY)
    assert begin_probe(state, 50.0, POLICY) == state


def test_closed_state_ignores_begin_probe() -> None:
    state = run([OK])
    assert begin_probe(state, 0.0, POLICY) == state
    assert begin_probe(None, 0.0, POLICY) == DeploymentHealth()


# ---- measurements -------------------------------------------------------------------------


def test_latency_ewma_from_successes_only() -> None:
    policy = HealthPolicy(latency_alpha=0.5)
    state = observe(None, Outcome(True, 1.0), 0.0, policy)
    assert latency(state) == 1.0
    state = observe(state, Outcome(True, 3.0), 0.0, policy)
    assert latency(state) == pytest.approx(2.0)
    state = observe(state, Outcome(False, 0.001, FailureKind.CONNECT), 0.0, policy)
    assert latency(state) == pytest.approx(2.0)
    state = observe(state, Outcome(True, None), 0.0, policy)
    assert latency(state) == pytest.approx(2.0)
    state = observe(state, Outcome(True, math.nan), 0.0, policy)
    assert latency(state) == pytest.approx(2.0)
    state = observe(state, Outcome(True, -4.0), 0.0, policy)
    assert latency(state) == pytest.approx(1.0)  # negative counts as 0


def test_success_rate_is_laplace_smoothed() -> None:
    assert success_rate(run([OK] * 8)) == pytest.approx(9 / 10)
    assert success_rate(run([OK, FAIL, FAIL])) == pytest.approx(2 / 5)
    assert success_rate(run([OK])) > success_rate(None) > success_rate(run([FAIL]))


@pytest.mark.parametrize(
    "bad",
    [
        {"window": 0}, {"failure_threshold": 0}, {"min_samples": 0},
        {"error_rate_threshold": 0.0}, {"error_rate_threshold": 1.5},
        {"cooldown": -1.0}, {"cooldown": math.inf}, {"latency_alpha": 0.0},
    ],
)
def test_policy_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        HealthPolicy(**bad)  # type: ignore[arg-type]


@given(st.lists(st.booleans(), min_size=1, max_size=100), st.integers(1, 30))
def test_window_is_bounded_and_keeps_the_latest(oks: list[bool], window: int) -> None:
    policy = HealthPolicy(window=window, failure_threshold=1000, min_samples=1000)
    state = run([OK if ok else FAIL for ok in oks], policy=policy)
    assert len(state.recent) <= window
    assert state.recent == tuple(oks[-window:])
    assert 0.0 < success_rate(state) < 1.0


# ---- a stateful model test ----------------------------------------------------------------

KINDS = st.sampled_from([None, *FailureKind])


class HealthMachine(RuleBasedStateMachine):
    """Drives one deployment's health with outcomes, probes and a wobbly clock.

    Invariants: the window never exceeds its bound; an open circuit is never available
    before its cooldown has elapsed; a probe in flight implies half-open; a half-open
    circuit with a fresh probe is not available.
    """

    def __init__(self) -> None:
        super().__init__()
        self.policy = HealthPolicy(window=6, failure_threshold=3, min_samples=4, cooldown=10.0)
        self.state: DeploymentHealth | None = None
        self.now = 0.0

    @rule(dt=st.floats(-5.0, 20.0, allow_nan=False))
    def tick(self, dt: float) -> None:
        self.now += dt  # may go backwards

    @rule(ok=st.booleans(), kind=KINDS, lat=st.none() | st.floats(-1.0, 10.0))
    def outcome(self, ok: bool, kind: FailureKind | None, lat: float | None) -> None:
        before = self.state
        after = observe(before, Outcome(ok, lat, None if ok else kind), self.now, self.policy)
        was = "closed" if before is None else before.circuit
        if not ok and kind in CALLER_FAULT_KINDS:
            assert after.circuit == was
            assert after.recent == (() if before is None else before.recent)
        elif was == "half_open":
            assert after.circuit == ("closed" if ok else "open")
        elif was == "open":
            assert after.circuit == "open"
            assert before is not None and after.opened_at == before.opened_at
        elif ok:
            assert after.circuit == "closed"
        if after.circuit == "open" and was != "open":
            assert after.opened_at == self.now
        self.state = after

    @precondition(lambda self: self.state is not None)
    @rule()
    def probe(self) -> None:
        assert self.state is not None
        allowed = available(self.state, self.now, self.policy)
        after = begin_probe(self.state, self.now, self.policy)
        if self.state.circuit != "closed" and allowed:
            assert after.circuit == "half_open" and after.probe_started_at == self.now
            assert not available(after, self.now, self.policy)  # exactly one probe
        else:
            assert after == self.state
        self.state = after

    @invariant()
    def window_is_bounded(self) -> None:
        if self.state is not None:
            assert len(self.state.recent) <= self.policy.window
            assert self.state.consecutive_failures >= 0
            assert 0.0 < success_rate(self.state) < 1.0

    @invariant()
    def open_is_unavailable_before_cooldown(self) -> None:
        s = self.state
        if s is not None and s.circuit == "open":
            assert s.opened_at is not None
            if self.now - s.opened_at < self.policy.cooldown:
                assert not available(s, self.now, self.policy)

    @invariant()
    def probes_only_when_half_open(self) -> None:
        s = self.state
        if s is not None and s.probe_in_flight:
            assert s.circuit == "half_open"
            assert s.probe_started_at is not None
            if self.now - s.probe_started_at < self.policy.cooldown:
                assert not available(s, self.now, self.policy)

    @invariant()
    def latency_is_never_negative(self) -> None:
        lat = latency(self.state)
        assert lat is None or lat >= 0.0


TestHealthMachine = HealthMachine.TestCase


# ---- the machine's entry: step ------------------------------------------------------------

health_outcomes = st.builds(
    Outcome, st.booleans(), st.none() | st.floats(0, 5), st.none() | st.sampled_from(list(FailureKind))
)
health_events = st.one_of(st.builds(Observed, health_outcomes), st.just(ProbeStarting()))


@given(st.lists(st.tuples(health_events, st.floats(0, 500)), max_size=40))
def test_step_is_observe_and_begin_probe_and_says_when_the_circuit_moved(
    events: list[tuple[Observed | ProbeStarting, float]],
) -> None:
    state: DeploymentHealth | None = None
    for event, now in events:
        expected = (
            observe(state, event.outcome, now, POLICY)
            if isinstance(event, Observed)
            else begin_probe(state, now, POLICY)
        )
        before = (state or DeploymentHealth()).circuit
        state, actions = step(state, event, now, POLICY)
        assert state == expected
        if state.circuit == before:
            assert actions == ()
        else:
            assert actions == (CircuitChanged(before, state.circuit),)
