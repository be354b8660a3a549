"""The attempt machine: one table test per rule, the table's coverage, and a stateful fuzz."""

from __future__ import annotations

from decimal import Decimal

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import errors
from core.attempts import (
    EVENT_TYPES,
    TERMINAL,
    TRANSITIONS,
    Action,
    AttemptFailed,
    AttemptPolicy,
    Attempts,
    CallProvider,
    ClientGone,
    Completed,
    Event,
    Fail,
    Finish,
    FirstChunk,
    Halted,
    IllegalTransition,
    Phase,
    SleepUntil,
    Woke,
    _moved,
    start,
    step,
)
from core.catalog import Deployment, Price
from core.errors import StorageUnavailable
from core.fallback import PROVIDER_DOWN_KINDS
from core.model import RETRYABLE_KINDS, FailureKind, Usage


def dep(name: str, provider: str = "p") -> Deployment:
    return Deployment(
        id=f"{provider}/{name}",
        model="m",
        provider=provider,
        upstream_model=name,
        price=Price(Decimal(1), Decimal(2)),
        context_window=1000,
        max_output_tokens=100,
    )


A, B, C = dep("a", "pa"), dep("b", "pb"), dep("c", "pc")
A2 = dep("a2", "pa")  # a second deployment on A's provider
POLICY = AttemptPolicy()
USAGE = Usage(input_tokens=3, output_tokens=5)


def failed(kind: FailureKind, retry_after: float | None = None, detail: str = "") -> AttemptFailed:
    return AttemptFailed(kind, retry_after, detail)


def run(
    plan: tuple[Deployment, ...], events: list[tuple[Event, float]], policy: AttemptPolicy = POLICY
) -> tuple[Attempts, list[tuple[Action, ...]]]:
    state, actions = start(plan, policy, 0.0)
    out = [actions]
    for event, now in events:
        state, actions = step(state, event, now)
        out.append(actions)
    return state, out


def only(actions: tuple[Action, ...]) -> Action:
    assert len(actions) == 1, actions
    return actions[0]


# ---- start ------------------------------------------------------------------------------


def test_start_calls_the_first_deployment_with_the_attempt_deadline() -> None:
    state, actions = start((A, B), POLICY, 10.0)
    assert actions == (CallProvider(A, 1, 70.0),)
    assert state.phase is Phase.CALLING and state.current == A and not state.done
    assert [(r.deployment_id, r.provider, r.attempt, r.started_at, r.ended_at, r.outcome)
            for r in state.records] == [("pa/a", "pa", 1, 10.0, None, "in_flight")]


def test_call_deadline_is_capped_by_the_total_deadline() -> None:
    policy = AttemptPolicy(attempt_timeout=60, total_timeout=100)
    state, _ = start((A, B), policy, 0.0)
    state, actions = step(state, failed(FailureKind.CONNECT, retry_after=50.0), 1.0)
    assert actions == (CallProvider(B, 2, 61.0),)  # retry-after 50 > 20: moved on
    state, actions = step(state, failed(FailureKind.CONNECT), 70.0)
    assert actions == (SleepUntil(70.25),)  # first try on B: base_backoff * 2**0
    state, actions = step(state, Woke(), 70.25)
    assert actions == (CallProvider(B, 3, 100.0),)  # 70.25 + 60 is past the total deadline


def test_empty_plan_fails_at_once_with_no_route() -> None:
    state, actions = start((), POLICY, 0.0)
    fail = only(actions)
    assert isinstance(fail, Fail) and isinstance(fail.error, errors.NoRouteAvailable)
    assert fail.after_first_chunk is False
    assert state.done and state.phase is Phase.FAILED and state.records == ()
    assert state.current is None


# ---- success ----------------------------------------------------------------------------


def test_completed_without_first_chunk_finishes() -> None:
    state, out = run((A, B), [(Completed(USAGE), 2.0)])
    assert out[-1] == (Finish(A),)
    assert state.phase is Phase.SUCCEEDED and state.done and not state.first_chunk_sent
    assert state.records[-1].outcome == "ok" and state.records[-1].ended_at == 2.0


def test_stream_first_chunk_then_completed_finishes() -> None:
    state, out = run((A,), [(FirstChunk(), 1.0), (Completed(USAGE), 2.0)])
    assert out[1] == ()  # FirstChunk asks for nothing
    assert out[2] == (Finish(A),)
    assert state.phase is Phase.SUCCEEDED and state.first_chunk_sent


# ---- retryable failures -----------------------------------------------------------------


@pytest.mark.parametrize("kind", [k for k in FailureKind if k in RETRYABLE_KINDS])
def test_retryable_failure_sleeps_backoff_then_retries_same_deployment(kind: FailureKind) -> None:
    # (A2 is on A's provider: no other provider to switch to)
    state, out = run((A, A2), [(failed(kind), 1.0)])
    assert out[-1] == (SleepUntil(1.25),)
    assert state.phase is Phase.SLEEPING
    assert state.records[-1].outcome == kind.value and state.records[-1].ended_at == 1.0
    state, actions = step(state, Woke(), 1.25)
    assert actions == (CallProvider(A, 2, 61.25),)
    assert state.phase is Phase.CALLING


def test_backoff_doubles_per_try_and_is_capped() -> None:
    policy = AttemptPolicy(max_attempts=10, retries_per_deployment=5, base_backoff=1.0,
                           max_backoff=5.0)
    state, _ = start((A,), policy, 0.0)
    sleeps = []
    now = 0.0
    for _ in range(5):
        state, actions = step(state, failed(FailureKind.SERVER_ERROR), now)
        at = only(actions)
        assert isinstance(at, SleepUntil)
        sleeps.append(at.at - now)
        now = at.at
        state, _ = step(state, Woke(), now)
    assert sleeps == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_retry_after_is_used_instead_of_backoff() -> None:
    _, out = run((A, B), [(failed(FailureKind.RATE_LIMITED, retry_after=7.0), 1.0)])
    assert out[-1] == (SleepUntil(8.0),)


def test_retry_after_above_max_moves_on_at_once() -> None:
    state, out = run((A, B), [(failed(FailureKind.RATE_LIMITED, retry_after=21.0), 1.0)])
    assert out[-1] == (CallProvider(B, 2, 61.0),)
    assert state.current == B and state.phase is Phase.CALLING


def test_retries_per_deployment_exhausted_moves_to_next_without_sleep() -> None:
    state, out = run(
        (A, A2),
        [(failed(FailureKind.TIMEOUT), 1.0), (Woke(), 1.25), (failed(FailureKind.TIMEOUT), 2.0)],
    )
    assert out[-1] == (CallProvider(A2, 3, 62.0),)
    assert [r.deployment_id for r in state.records] == ["pa/a", "pa/a", "pa/a2"]


def test_zero_retries_per_deployment_falls_back_immediately() -> None:
    policy = AttemptPolicy(retries_per_deployment=0)
    _, out = run((A, B, C), [(failed(FailureKind.CONNECT), 1.0), (failed(FailureKind.CONNECT), 2.0)],
                 policy)
    assert out[1] == (CallProvider(B, 2, 61.0),)
    assert out[2] == (CallProvider(C, 3, 62.0),)


def test_max_attempts_is_a_total_budget() -> None:
    policy = AttemptPolicy(max_attempts=2, retries_per_deployment=3)
    state, out = run((A, A2), [(failed(FailureKind.OVERLOADED), 1.0), (Woke(), 1.25),
                               (failed(FailureKind.OVERLOADED), 2.0)], policy)
    fail = only(out[-1])
    assert isinstance(fail, Fail) and type(fail.error) is errors.UpstreamError
    assert "2 upstream attempt(s) failed" in fail.error.message
    assert "overloaded" in fail.error.message
    assert state.phase is Phase.FAILED and len(state.records) == 2


@pytest.mark.parametrize(
    ("kind", "error_type"),
    [
        (FailureKind.TIMEOUT, errors.UpstreamTimeout),
        (FailureKind.RATE_LIMITED, errors.UpstreamRateLimited),
        (FailureKind.SERVER_ERROR, errors.UpstreamError),
        (FailureKind.CONNECT, errors.UpstreamError),
        (FailureKind.OVERLOADED, errors.UpstreamError),
        (FailureKind.STREAM_CUT, errors.UpstreamError),
    ],
)
def test_exhaustion_error_matches_the_last_kind(
    kind: FailureKind, error_type: type[errors.GatewayError]
) -> None:
    policy = AttemptPolicy(retries_per_deployment=0)
    state, out = run((A, B), [(failed(FailureKind.SERVER_ERROR), 1.0),
                              (failed(kind, retry_after=3.0, detail="sk-secret"), 2.0)], policy)
    fail = only(out[-1])
    assert isinstance(fail, Fail) and type(fail.error) is error_type
    assert fail.after_first_chunk is False
    assert fail.error.message == (
        f"2 upstream attempt(s) failed; the last failure was: {kind.value} "
        f"(attempts: pa/a: server_error, pb/b: {kind.value})"
    )
    assert "sk-secret" not in fail.error.message
    if kind is FailureKind.RATE_LIMITED:
        assert fail.error.retry_after == 3.0
    assert state.error is fail.error and state.done


def test_a_sleep_past_the_total_deadline_is_not_taken() -> None:
    policy = AttemptPolicy(total_timeout=10.0)
    # Alone: fail instead of sleeping.
    state, out = run((A,), [(failed(FailureKind.RATE_LIMITED, retry_after=15.0), 1.0)],
                     AttemptPolicy(total_timeout=10.0, max_retry_after=30.0))
    fail = only(out[-1])
    assert isinstance(fail, Fail) and isinstance(fail.error, errors.UpstreamRateLimited)
    # With another deployment: move on to it at once.
    _, out = run((A, B), [(failed(FailureKind.SERVER_ERROR), 9.9)], policy)
    assert out[-1] == (CallProvider(B, 2, 10.0),)


def test_no_fallback_once_the_total_deadline_passed() -> None:
    policy = AttemptPolicy(total_timeout=10.0)
    _, out = run((A, B), [(failed(FailureKind.TIMEOUT), 10.0)], policy)
    fail = only(out[-1])
    assert isinstance(fail, Fail) and isinstance(fail.error, errors.UpstreamTimeout)


def test_woke_after_the_total_deadline_fails() -> None:
    policy = AttemptPolicy(total_timeout=10.0)
    state, out = run((A, A2), [(failed(FailureKind.CONNECT), 1.0), (Woke(), 11.0)], policy)
    fail = only(out[-1])
    assert isinstance(fail, Fail) and type(fail.error) is errors.UpstreamError
    assert "connect_error" in fail.error.message and state.phase is Phase.FAILED


def test_last_deployment_exhausted_fails() -> None:
    policy = AttemptPolicy(retries_per_deployment=0)
    _, out = run((A,), [(failed(FailureKind.STREAM_CUT), 1.0)], policy)
    fail = only(out[-1])
    assert isinstance(fail, Fail) and "1 upstream attempt(s) failed" in fail.error.message


# ---- non-retryable failures ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error_type", "status", "param"),
    [
        (FailureKind.BAD_REQUEST, errors.UpstreamRejected, 400, None),
        (FailureKind.CONTEXT_LENGTH, errors.ContextLengthExceeded, 400, "messages"),
        (FailureKind.CONTENT_FILTER, errors.ContentFiltered, 400, None),
        (FailureKind.AUTH, errors.UpstreamError, 502, None),
    ],
)
def test_non_retryable_failure_fails_at_once_without_fallback(
    kind: FailureKind, error_type: type[errors.GatewayError], status: int, param: str | None
) -> None:
    state, out = run((A, B, C), [(failed(kind, retry_after=1.0, detail="why it failed"), 1.0)])
    fail = only(out[-1])
    assert isinstance(fail, Fail) and type(fail.error) is error_type
    assert fail.error.status == status and fail.error.param == param
    assert not fail.after_first_chunk
    assert state.phase is Phase.FAILED and len(state.records) == 1
    assert state.records[0].outcome == kind.value
    if kind is FailureKind.AUTH:
        assert "why it failed" not in fail.error.message
        assert "credentials" in fail.error.message
    else:
        assert "why it failed" in fail.error.message


def test_provider_detail_is_shortened() -> None:
    _, out = run((A,), [(failed(FailureKind.BAD_REQUEST, detail="x" * 5000), 1.0)])
    fail = only(out[-1])
    assert isinstance(fail, Fail) and len(fail.error.message) < 400


# ---- after the first chunk ------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(FailureKind))
def test_failure_after_first_chunk_never_falls_back(kind: FailureKind) -> None:
    state, out = run((A, B), [(FirstChunk(), 1.0), (failed(kind, retry_after=0.1), 2.0)])
    fail = only(out[-1])
    assert isinstance(fail, Fail) and type(fail.error) is errors.UpstreamError
    assert fail.after_first_chunk is True
    assert state.phase is Phase.FAILED and len(state.records) == 1
    assert state.records[0].outcome == kind.value


def test_first_chunk_is_only_legal_while_calling() -> None:
    state, _ = run((A,), [(FirstChunk(), 1.0)])
    with pytest.raises(IllegalTransition):
        step(state, FirstChunk(), 2.0)


# ---- client gone ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "after_first_chunk", "outcomes"),
    [
        ([], False, ["client_gone"]),
        ([(FirstChunk(), 1.0)], True, ["client_gone"]),
        # while sleeping (a 429 retries the same provider; a timeout would switch to B)
        ([(failed(FailureKind.RATE_LIMITED), 1.0)], False, ["rate_limited"]),
    ],
)
def test_client_gone_cancels_any_live_phase(
    events: list[tuple[Event, float]], after_first_chunk: bool, outcomes: list[str]
) -> None:
    state, _ = run((A, B), [*events, (ClientGone(), 5.0)])
    assert state.phase is Phase.CANCELLED and state.done
    assert [r.outcome for r in state.records] == outcomes
    assert state.records[-1].ended_at is not None
    assert isinstance(state.error, errors.ClientClosed)
    _, out = run((A, B), [*events, (ClientGone(), 5.0)])
    fail = only(out[-1])
    assert isinstance(fail, Fail) and isinstance(fail.error, errors.ClientClosed)
    assert fail.after_first_chunk is after_first_chunk


@pytest.mark.parametrize(
    "events",
    [
        [(Completed(USAGE), 1.0)],
        [(failed(FailureKind.AUTH), 1.0)],
        [(ClientGone(), 1.0)],
    ],
)
def test_terminal_phases_ignore_client_gone_and_reject_the_rest(
    events: list[tuple[Event, float]],
) -> None:
    state, _ = run((A, B), events)
    assert state.done
    assert step(state, ClientGone(), 9.0) == (state, ())
    for event in (failed(FailureKind.TIMEOUT), FirstChunk(), Completed(USAGE), Woke()):
        with pytest.raises(IllegalTransition):
            step(state, event, 9.0)


def test_woke_is_only_legal_while_sleeping() -> None:
    state, _ = start((A,), POLICY, 0.0)
    with pytest.raises(IllegalTransition):
        step(state, Woke(), 1.0)


def test_illegal_transition_is_a_programming_error_not_a_client_error() -> None:
    assert issubclass(IllegalTransition, RuntimeError)
    assert not issubclass(IllegalTransition, errors.GatewayError)


# ---- the table ------------------------------------------------------------------------------


def _state_in(phase: Phase) -> Attempts:
    paths: dict[Phase, list[tuple[Event, float]]] = {
        Phase.CALLING: [],
        Phase.STREAMING: [(FirstChunk(), 1.0)],
        Phase.SLEEPING: [(failed(FailureKind.RATE_LIMITED), 1.0)],
        Phase.SUCCEEDED: [(Completed(USAGE), 1.0)],
        Phase.FAILED: [(failed(FailureKind.BAD_REQUEST), 1.0)],
        Phase.CANCELLED: [(ClientGone(), 1.0)],
    }
    state, _ = run((A, B), paths[phase])
    assert state.phase is phase
    return state


def _event_of(event_type: type[Event]) -> Event:
    samples: dict[type[Event], Event] = {
        AttemptFailed: failed(FailureKind.SERVER_ERROR),
        FirstChunk: FirstChunk(),
        Completed: Completed(USAGE),
        ClientGone: ClientGone(),
        Woke: Woke(),
        Halted: Halted(StorageUnavailable("the database is away")),
    }
    return samples[event_type]


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_phase_event_pair_is_in_the_table_or_raises(
    phase: Phase, event_type: type[Event]
) -> None:
    state = _state_in(phase)
    event = _event_of(event_type)
    if (phase, event_type) in TRANSITIONS:
        new, actions = step(state, event, 2.0)
        assert isinstance(new, Attempts) and isinstance(actions, tuple)
    else:
        with pytest.raises(IllegalTransition):
            step(state, event, 2.0)


def test_table_matches_the_written_rules() -> None:
    live = {Phase.CALLING, Phase.STREAMING, Phase.SLEEPING}
    assert set(Phase) == live | TERMINAL
    expected = (
        {(p, ClientGone) for p in Phase}
        | {(p, Halted) for p in Phase}
        | {(Phase.CALLING, t) for t in (AttemptFailed, FirstChunk, Completed)}
        | {(Phase.STREAMING, t) for t in (AttemptFailed, Completed)}
        | {(Phase.SLEEPING, Woke)}
    )
    assert set(TRANSITIONS) == expected


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        AttemptPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        AttemptPolicy(retries_per_deployment=-1)
    with pytest.raises(ValueError):
        AttemptPolicy(total_timeout=0)


# ---- generated event sequences --------------------------------------------------------------

RETRYABLE = sorted(RETRYABLE_KINDS, key=str)
KINDS = st.sampled_from(RETRYABLE) | st.sampled_from(list(FailureKind))  # retryable favoured
RETRY_AFTER = st.none() | st.floats(min_value=-1.0, max_value=60.0)
# mostly small steps, sometimes long ones; time may also go backwards a little
DT = st.sampled_from([0.0, 0.01, 0.5]) | st.floats(min_value=-1.0, max_value=30.0)
POLICIES = st.builds(
    AttemptPolicy,
    max_attempts=st.integers(min_value=1, max_value=8),
    retries_per_deployment=st.integers(min_value=0, max_value=3),
    base_backoff=st.floats(min_value=0.0, max_value=3.0),
    max_backoff=st.floats(min_value=0.0, max_value=10.0),
    max_retry_after=st.floats(min_value=0.0, max_value=30.0),
    attempt_timeout=st.floats(min_value=0.1, max_value=60.0),
    total_timeout=st.floats(min_value=0.1, max_value=200.0),
)
# one step: (which legal event, failure kind, retry-after, time elapsed)
STEPS = st.lists(st.tuples(st.integers(0, 99), KINDS, RETRY_AFTER, DT), min_size=1, max_size=40)


class Driver:
    """Feeds only legal events for the current phase and checks the written invariants."""

    def __init__(
        self, n: int, policy: AttemptPolicy, t0: float, providers: tuple[str, ...] = ()
    ) -> None:
        # one provider per deployment unless `providers` names them (then len(providers) == n)
        names = providers or tuple(f"p{i}" for i in range(n))
        self.plan = tuple(dep(f"m{i}", names[i]) for i in range(n))
        self.policy = policy
        self.now = t0
        self.total_deadline = t0 + policy.total_timeout
        self.calls: list[CallProvider] = []
        self.terminal_actions = 0
        self.saw_first_chunk = False
        self.pending_sleep: float | None = None
        self.state, actions = start(self.plan, policy, t0)
        self.check(actions, expect_one=True)

    def legal_event(self, choice: int, kind: FailureKind, retry_after: float | None) -> Event:
        if choice < 5:  # rare: the client leaves (in terminal phases: ignored)
            return ClientGone()
        failure = AttemptFailed(kind, retry_after, "detail")
        options: dict[Phase, list[Event]] = {
            # failures are the interesting path, so they are the most likely
            Phase.CALLING: [failure, failure, failure, failure, FirstChunk(), Completed(USAGE)],
            Phase.STREAMING: [failure, Completed(USAGE)],
            Phase.SLEEPING: [Woke()],
        }
        events = options.get(self.state.phase, [ClientGone()])
        return events[choice % len(events)]

    def feed(self, event: Event, dt: float) -> None:
        if isinstance(event, Woke):
            assert self.pending_sleep is not None
            self.now = self.pending_sleep + (dt / 10)  # roughly on time, maybe a bit early
        else:
            self.now += dt
        before = self.state
        if before.done:
            self.poke_finished(event)
            return
        if isinstance(event, FirstChunk):
            self.saw_first_chunk = True
        self.state, actions = step(before, event, self.now)
        self.check(actions, expect_one=not isinstance(event, FirstChunk))
        if isinstance(event, ClientGone):
            assert self.state.phase is Phase.CANCELLED

    def poke_finished(self, event: Event) -> None:
        """Once done the state never changes: ClientGone is ignored, the rest raise."""
        before = self.state
        assert isinstance(event, ClientGone)
        assert step(before, event, self.now) == (before, ())
        for other in (AttemptFailed(FailureKind.TIMEOUT), FirstChunk(), Completed(USAGE), Woke()):
            with pytest.raises(IllegalTransition):
                step(before, other, self.now)

    def check(self, actions: tuple[Action, ...], *, expect_one: bool) -> None:
        assert len(actions) == (1 if expect_one else 0)
        self.pending_sleep = None
        for action in actions:
            if isinstance(action, CallProvider):
                assert not self.saw_first_chunk, "a call after the first chunk"
                assert action.deployment in self.plan
                if self.calls and action.deployment != self.calls[-1].deployment:
                    tried = {c.deployment for c in self.calls}
                    assert action.deployment not in tried, "went back in the plan"
                assert action.attempt == len(self.calls) + 1
                assert self.now < action.deadline <= self.total_deadline
                assert action.deadline <= self.now + self.policy.attempt_timeout
                self.calls.append(action)
                assert self.state.phase is Phase.CALLING
                assert self.state.current == action.deployment
            elif isinstance(action, SleepUntil):
                assert action.at <= self.total_deadline
                assert self.state.phase is Phase.SLEEPING
                self.pending_sleep = action.at
            else:
                self.terminal_actions += 1
                assert self.state.done
                if isinstance(action, Fail):
                    assert action.after_first_chunk is self.saw_first_chunk
                    assert self.state.error is action.error
                else:
                    assert self.state.phase is Phase.SUCCEEDED
                    assert action.deployment == self.calls[-1].deployment
        self.invariants()

    def invariants(self) -> None:
        calls = len(self.calls)
        assert sorted(d.id for d in self.state.plan) == sorted(d.id for d in self.plan)
        assert calls <= self.policy.max_attempts
        assert calls <= len(self.plan) * (self.policy.retries_per_deployment + 1)
        assert self.terminal_actions == (1 if self.state.done else 0)
        assert self.state.first_chunk_sent is self.saw_first_chunk
        records = self.state.records
        assert len(records) == calls
        assert [r.attempt for r in records] == list(range(1, calls + 1))
        assert [r.deployment_id for r in records] == [c.deployment.id for c in self.calls]
        in_flight = [r for r in records if r.outcome == "in_flight"]
        if self.state.phase in (Phase.CALLING, Phase.STREAMING):
            assert in_flight == [records[-1]]
        else:
            assert in_flight == []
        assert all(r.ended_at is not None for r in records if r.outcome != "in_flight")
        oks = sum(r.outcome == "ok" for r in records)
        assert oks == (1 if self.state.phase is Phase.SUCCEEDED else 0)


@given(n=st.sampled_from([1, 2, 3, 4, 0]), policy=POLICIES, t0=st.floats(-1e3, 1e3), steps=STEPS)
def test_generated_sequences_keep_every_invariant(
    n: int, policy: AttemptPolicy, t0: float,
    steps: list[tuple[int, FailureKind, float | None, float]],
) -> None:
    driver = Driver(n, policy, t0)
    for choice, kind, retry_after, dt in steps:
        driver.feed(driver.legal_event(choice, kind, retry_after), dt)


def _expected_calls(n: int, policy: AttemptPolicy, kinds: list[FailureKind]) -> int:
    """The written rules, counted: each deployment (all on distinct providers) gets its
    retries, except that a provider-level failure leaves it at once for the next one."""
    calls = 0
    for index in range(n):
        for _ in range(policy.retries_per_deployment + 1):
            kind = kinds[calls]
            calls += 1
            if calls == policy.max_attempts:
                return calls
            if kind in PROVIDER_DOWN_KINDS and index < n - 1:
                break
    return calls


@given(
    n=st.integers(1, 4),
    policy=POLICIES,
    kinds=st.lists(st.sampled_from(RETRYABLE), min_size=40, max_size=40),
)
def test_only_retryable_failures_end_in_exhaustion_within_budget(
    n: int, policy: AttemptPolicy, kinds: list[FailureKind]
) -> None:
    driver = Driver(n, policy, 0.0)
    for kind in kinds:
        if driver.state.done:
            break
        if driver.state.phase is Phase.SLEEPING:
            driver.feed(Woke(), 0.0)
        driver.feed(AttemptFailed(kind), 0.0)
    assert driver.state.phase is Phase.FAILED
    expected = _expected_calls(n, policy, kinds)
    if policy.total_timeout > 4 * policy.max_backoff * policy.max_attempts:  # time is no limit
        assert len(driver.calls) == expected
    error = driver.state.error
    assert isinstance(error, errors.UpstreamError)
    assert f"{len(driver.calls)} upstream attempt(s) failed" in error.message


def test_the_written_out_copy_of_a_state_is_evolve() -> None:
    # `_moved` spells out what `evolve` does for the success path's transitions; a field
    # added to `Attempts` and left out there would fail here
    state = Attempts(
        policy=AttemptPolicy(max_attempts=7), plan=(A, B, C), deadline=99.0, phase=Phase.SLEEPING,
        index=1, tries_here=2, records=(), first_chunk_sent=True,
        last_failure=FailureKind.TIMEOUT, last_retry_after=1.5, error=errors.UpstreamError("x"),
    )
    assert {f.name for f in attrs.fields(Attempts)} == {
        "policy", "plan", "deadline", "phase", "index", "tries_here", "records",
        "first_chunk_sent", "last_failure", "last_retry_after", "error"}
    assert _moved(state, Phase.CALLING, state.records) == attrs.evolve(state, phase=Phase.CALLING)
    assert _moved(state, Phase.STREAMING, (), index=2, tries_here=0, first_chunk_sent=False) == (
        attrs.evolve(state, phase=Phase.STREAMING, index=2, tries_here=0, first_chunk_sent=False))


@pytest.mark.parametrize("streaming", [False, True])
def test_halted_fails_with_the_gateways_error_and_ends_the_attempt_as_halted(streaming: bool) -> None:
    """A settle the database could not make halts the run: the request fails with that
    error (no retry, no fallback) and the attempt being made is closed as "halted" at
    that time, not left "in_flight"."""
    events = [(FirstChunk(), 1.0)] if streaming else []
    state, _ = run((A, B), events)
    error = StorageUnavailable("the database is away")
    new, actions = step(state, Halted(error), 3.0)
    assert new.phase is Phase.FAILED and new.error is error
    assert actions == (Fail(error, streaming),)
    assert [(r.outcome, r.ended_at) for r in new.records] == [("halted", 3.0)]
    assert step(new, Halted(error), 4.0) == (new, ())  # once ended, nothing more happens
