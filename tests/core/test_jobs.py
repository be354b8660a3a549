"""The job machine: a table test per rule, the table's coverage, and a stateful fuzz."""

from __future__ import annotations

import pytest
from attrs import evolve
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from core.errors import Conflict
from core.jobs import (
    DEADLINE_EXCEEDED,
    EVENT_TYPES,
    LEASE_EXPIRED,
    STATUSES,
    TERMINAL,
    TRANSITIONS,
    Announce,
    Cancel,
    Claim,
    ExpireLease,
    Fail,
    Heartbeat,
    JobConflict,
    JobEvent,
    JobPolicy,
    JobState,
    LeaseLost,
    NotClaimable,
    RunJob,
    Succeed,
    apply,
    backoff,
    claimable,
    is_terminal,
    machine_error,
    new_job,
    step,
)

POLICY = JobPolicy(lease_seconds=30, max_attempts=3, base_backoff=2, max_backoff=60)


def running(worker: str = "w1", *, now: float = 0.0, attempts: int = 1, **kw: object) -> JobState:
    return JobState(status="running", attempts=attempts, run_after=0.0, lease_owner=worker,
                    lease_expires=now + 30, **kw)  # type: ignore[arg-type]


# ---- table and values ------------------------------------------------------------------


def test_machine_failures_have_client_facing_errors() -> None:
    spent = apply(running(attempts=3), Claim("w2"), 31.0, POLICY)
    assert (spent.status, spent.error) == ("failed", LEASE_EXPIRED)
    body = machine_error(spent, POLICY).to_body()["error"]
    assert body["code"] == "job_attempts_exhausted" and body["type"] == "server_error"
    assert "3 attempt(s)" in str(body["message"]) and "max_attempts = 3" in str(body["message"])
    late = apply(running(deadline=20.0), Heartbeat("w1"), 20.0, POLICY)
    assert (late.status, late.error) == ("canceled", DEADLINE_EXCEEDED)
    err = machine_error(late, POLICY)
    assert (err.code, err.status) == ("job_deadline_exceeded", 504)


def test_table_covers_every_status_and_event() -> None:
    assert set(TRANSITIONS) == {(s, e) for s in STATUSES for e in EVENT_TYPES}


def test_terminal_statuses() -> None:
    assert TERMINAL == {"succeeded", "failed", "canceled", "aborted"}
    assert [is_terminal(s) for s in STATUSES] == [False, False, True, True, True, True]


@pytest.mark.parametrize(
    "kw",
    [{"status": "running"}, {"status": "running", "lease_owner": "w"},
     {"status": "queued", "lease_owner": "w", "lease_expires": 1.0},
     {"status": "succeeded", "lease_expires": 1.0}, {"status": "paused"},
     {"status": "queued", "attempts": -1}],
)
def test_invalid_states_cannot_be_built(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        JobState(**kw)  # type: ignore[arg-type]


def test_conflicts_are_409_gateway_errors() -> None:
    assert issubclass(LeaseLost, JobConflict) and issubclass(NotClaimable, JobConflict)
    assert issubclass(JobConflict, Conflict) and JobConflict.status == 409


def test_new_job() -> None:
    assert new_job(5.0) == JobState(status="queued", run_after=5.0)
    assert new_job(5.0, deadline=9.0, run_after=7.0).run_after == 7.0


# ---- Claim -----------------------------------------------------------------------------


def test_claim_queued_job_starts_a_leased_run() -> None:
    state = apply(new_job(0.0), Claim("w1"), 1.0, POLICY)
    assert state == JobState(status="running", attempts=1, run_after=0.0, lease_owner="w1",
                             lease_expires=31.0)


def test_claim_before_run_after_is_refused() -> None:
    job = new_job(0.0, run_after=10.0)
    assert not claimable(job, 9.9)
    with pytest.raises(NotClaimable):
        apply(job, Claim("w1"), 9.9, POLICY)
    assert claimable(job, 10.0)
    assert apply(job, Claim("w1"), 10.0, POLICY).status == "running"


def test_claim_of_a_live_lease_is_refused() -> None:
    job = running(now=0.0)
    assert not claimable(job, 30.0)  # expiry is strict: lease_expires < now
    with pytest.raises(NotClaimable):
        apply(job, Claim("w2"), 30.0, POLICY)


def test_claim_of_an_expired_lease_reclaims_with_a_new_attempt() -> None:
    job = running(now=0.0, attempts=1)
    assert claimable(job, 30.5)
    state = apply(job, Claim("w2"), 30.5, POLICY)
    assert (state.status, state.lease_owner, state.attempts, state.lease_expires) == (
        "running", "w2", 2, 60.5)


def test_reclaim_without_attempts_left_fails() -> None:
    state = apply(running(attempts=3), Claim("w2"), 31.0, POLICY)
    assert (state.status, state.error, state.lease_owner) == ("failed", LEASE_EXPIRED, None)


@pytest.mark.parametrize(
    ("job", "status"),
    [(new_job(0.0, deadline=5.0), "aborted"),  # never started: aborted, never billed
     (running(deadline=5.0), "canceled"),  # its run started: canceled
     (JobState(status="queued", attempts=1, deadline=5.0), "canceled")],  # a retry pending
)  # fmt: skip
def test_claim_at_or_past_deadline_ends_the_job(job: JobState, status: str) -> None:
    state = apply(job, Claim("w9"), 5.0, POLICY)
    assert (state.status, state.error) == (status, DEADLINE_EXCEEDED)
    assert state.lease_owner is None and state.attempts == job.attempts


# ---- Heartbeat -------------------------------------------------------------------------


def test_heartbeat_extends_the_owners_lease() -> None:
    assert apply(running(now=0.0), Heartbeat("w1"), 20.0, POLICY).lease_expires == 50.0


def test_heartbeat_with_clock_going_back_never_shortens_the_lease() -> None:
    assert apply(running(now=10.0), Heartbeat("w1"), 0.0, POLICY).lease_expires == 40.0


@pytest.mark.parametrize("job", [running("w2"), new_job(0.0)])
def test_heartbeat_from_a_non_owner_is_lease_lost(job: JobState) -> None:
    with pytest.raises(LeaseLost):
        apply(job, Heartbeat("w1"), 1.0, POLICY)


def test_heartbeat_past_deadline_cancels_the_job() -> None:
    state = apply(running(deadline=10.0), Heartbeat("w1"), 10.0, POLICY)
    assert (state.status, state.error) == ("canceled", DEADLINE_EXCEEDED)


# ---- Succeed / Fail --------------------------------------------------------------------


def test_succeed_by_owner() -> None:
    state = apply(running(), Succeed("w1"), 5.0, POLICY)
    assert (state.status, state.lease_owner, state.lease_expires) == ("succeeded", None, None)


def test_succeed_after_lease_ran_out_but_not_reclaimed_still_counts() -> None:
    assert apply(running(now=0.0), Succeed("w1"), 100.0, POLICY).status == "succeeded"


@pytest.mark.parametrize("event", [Succeed("w1"), Fail("w1", True, "boom")])
def test_report_from_a_stale_owner_is_lease_lost(event: JobEvent) -> None:
    reclaimed = apply(running("w1", now=0.0), Claim("w2"), 31.0, POLICY)
    with pytest.raises(LeaseLost):
        apply(reclaimed, event, 1.0, POLICY)
    with pytest.raises(LeaseLost):
        apply(new_job(0.0), event, 1.0, POLICY)


@pytest.mark.parametrize(("attempts", "delay"), [(1, 2.0), (2, 4.0)])
def test_retryable_failure_requeues_with_backoff(attempts: int, delay: float) -> None:
    state = apply(running(attempts=attempts), Fail("w1", True, "503"), 10.0, POLICY)
    assert (state.status, state.run_after, state.error, state.lease_owner) == (
        "queued", 10.0 + delay, "503", None)


def test_backoff_is_capped() -> None:
    policy = JobPolicy(max_attempts=100, base_backoff=2, max_backoff=60)
    assert [backoff(n, policy) for n in (1, 2, 3, 5, 6, 7, 99, 10**6)] == [
        2, 4, 8, 32, 60, 60, 60, 60]


def test_retryable_failure_without_attempts_left_fails() -> None:
    state = apply(running(attempts=3), Fail("w1", True, "503"), 10.0, POLICY)
    assert (state.status, state.error) == ("failed", "503")


def test_non_retryable_failure_fails_at_once() -> None:
    state = apply(running(attempts=1), Fail("w1", False, "bad input"), 10.0, POLICY)
    assert (state.status, state.error) == ("failed", "bad input")


def test_retry_that_cannot_start_before_the_deadline_fails() -> None:
    state = apply(running(deadline=11.0), Fail("w1", True, "503"), 10.0, POLICY)
    assert (state.status, state.error) == ("failed", "503")


# ---- Cancel ----------------------------------------------------------------------------


@pytest.mark.parametrize("job", [new_job(0.0), running()])
def test_cancel_is_immediate_and_idempotent(job: JobState) -> None:
    once = apply(job, Cancel(), 1.0, POLICY)
    assert (once.status, once.cancel_requested, once.lease_owner) == ("canceled", True, None)
    assert apply(once, Cancel(), 2.0, POLICY) is once


def test_runner_of_a_canceled_job_sees_it_on_heartbeat_and_late_reports_are_ignored() -> None:
    canceled = apply(running(), Cancel(), 1.0, POLICY)
    for event, now in ((Heartbeat("w1"), 2.0), (Succeed("w1"), 3.0), (Fail("w1", True, "x"), 3.0)):
        assert apply(canceled, event, now, POLICY) is canceled


# ---- ExpireLease -----------------------------------------------------------------------


def test_expire_requeues_when_attempts_remain() -> None:
    state = apply(running(now=0.0, attempts=2), ExpireLease(), 31.0, POLICY)
    assert (state.status, state.run_after, state.attempts, state.lease_owner) == (
        "queued", 31.0, 2, None)


def test_expire_without_attempts_left_fails() -> None:
    state = apply(running(now=0.0, attempts=3), ExpireLease(), 31.0, POLICY)
    assert (state.status, state.error) == ("failed", LEASE_EXPIRED)


def test_expire_past_deadline_cancels() -> None:
    state = apply(running(now=0.0, deadline=20.0), ExpireLease(), 31.0, POLICY)
    assert (state.status, state.error) == ("canceled", DEADLINE_EXCEEDED)


@pytest.mark.parametrize(("job", "now"), [(running(now=0.0), 30.0), (new_job(0.0), 99.0)])
def test_expire_on_live_lease_or_queued_job_changes_nothing(job: JobState, now: float) -> None:
    assert apply(job, ExpireLease(), now, POLICY) is job


# ---- terminal states -------------------------------------------------------------------

terminal_states = st.builds(
    JobState,
    status=st.sampled_from(sorted(TERMINAL)),
    attempts=st.integers(0, 5),
    run_after=st.floats(0, 100),
    deadline=st.none() | st.floats(0, 100),
    error=st.none() | st.text(max_size=5),
    cancel_requested=st.booleans(),
)
workers = st.sampled_from(["w1", "w2", "w3"])
times = st.floats(min_value=-10, max_value=1000, allow_nan=False)
events = st.one_of(
    st.builds(Claim, workers),
    st.builds(Heartbeat, workers),
    st.builds(Succeed, workers),
    st.builds(Fail, workers, st.booleans(), st.text(max_size=5)),
    st.builds(Cancel),
    st.builds(ExpireLease),
)


@given(terminal_states, events, times)
def test_terminal_states_never_change(state: JobState, event: JobEvent, now: float) -> None:
    assert step(state, event, now, POLICY) == (state, ())
    assert apply(state, event, now, POLICY) is state
    assert not claimable(state, 1e9)


# ---- stateful fuzz ---------------------------------------------------------------------


class JobMachine(RuleBasedStateMachine):
    """Random workers, sweepers and cancels racing on one job, with a jittery clock."""

    def __init__(self) -> None:
        super().__init__()
        self.policy = JobPolicy(lease_seconds=10, max_attempts=3, base_backoff=1,
                                max_backoff=8)
        self.now = 0.0
        self.state = new_job(0.0, deadline=None)
        self.claims = 0

    def _step(self, event: JobEvent) -> None:
        before = self.state
        try:
            after, actions = step(before, event, self.now, self.policy)
        except JobConflict as exc:
            # a refusal is only ever about leases / claimability of a live job
            assert not is_terminal(before.status)
            if isinstance(exc, NotClaimable):
                assert isinstance(event, Claim) and not claimable(before, self.now)
            else:
                assert isinstance(event, Heartbeat | Succeed | Fail)
                assert before.lease_owner != event.worker
            return
        if is_terminal(before.status):
            assert after is before
        # the actions: run exactly when a claim started a run, announce exactly at the end
        started = isinstance(event, Claim) and after.status == "running"
        assert (isinstance(event, Claim) and RunJob(event.worker) in actions) == started
        ended = is_terminal(after.status) and not is_terminal(before.status)
        assert (Announce(after.status) in actions) == ended
        assert len(actions) == started + ended
        if isinstance(event, Claim) and after.status == "running":
            assert after.lease_owner == event.worker
            assert after.attempts == before.attempts + 1
            self.claims += 1
        assert after.attempts >= before.attempts
        self.state = after

    @rule(dt=st.floats(min_value=-2, max_value=15, allow_nan=False))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule(worker=workers)
    def claim(self, worker: str) -> None:
        self._step(Claim(worker))

    @rule(worker=workers)
    def heartbeat(self, worker: str) -> None:
        self._step(Heartbeat(worker))

    @rule(worker=workers)
    def succeed(self, worker: str) -> None:
        self._step(Succeed(worker))

    @rule(worker=workers, retryable=st.booleans())
    def fail(self, worker: str, retryable: bool) -> None:
        self._step(Fail(worker, retryable, "err"))

    @rule()
    def expire(self) -> None:
        self._step(ExpireLease())

    @rule()
    def cancel(self) -> None:
        was_terminal = is_terminal(self.state.status)
        self._step(Cancel())
        assert self.state.status == "canceled" or was_terminal
        again = apply(self.state, Cancel(), self.now + 1, self.policy)
        assert again is self.state

    @rule(deadline=st.floats(min_value=0, max_value=200, allow_nan=False))
    def set_deadline(self, deadline: float) -> None:
        if not is_terminal(self.state.status):
            self.state = evolve(self.state, deadline=deadline)

    @invariant()
    def attempts_never_exceed_max(self) -> None:
        assert 0 <= self.state.attempts <= self.policy.max_attempts
        assert self.state.attempts == self.claims

    @invariant()
    def running_always_has_a_lease_and_nothing_else_does(self) -> None:
        has_lease = self.state.lease_owner is not None and self.state.lease_expires is not None
        assert has_lease == (self.state.status == "running")


TestJobMachine = JobMachine.TestCase


@given(st.integers(0, 3), times, times)
def test_claim_succeeds_exactly_when_claimable(attempts: int, run_after: float, now: float) -> None:
    job = JobState(status="queued", attempts=min(attempts, 2), run_after=run_after)
    if claimable(job, now):
        assert apply(job, Claim("w"), now, POLICY).status == "running"
    else:
        with pytest.raises(NotClaimable):
            apply(job, Claim("w"), now, POLICY)


@given(times, times)
def test_claimable_mirrors_lease_expiry(expires: float, now: float) -> None:
    assume(expires != now)
    job = evolve(running(), lease_expires=expires)
    assert claimable(job, now) == (expires < now)
