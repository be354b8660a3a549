"""The outbox rules: what a job change announces, and a delivery's machine (table tests
per rule, the table's coverage, and a stateful fuzz with the invariants written down)."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from core.outbox import (
    EVENT_TYPES,
    LEASE_EXPIRED,
    STATUSES,
    TERMINAL,
    TRANSITIONS,
    Claim,
    Delivered,
    DeliveryEvent,
    DeliveryPolicy,
    DeliveryState,
    Failed,
    Gone,
    JobChange,
    LeaseLost,
    NotClaimable,
    Refused,
    announced,
    claimable,
    events_filter,
    message_id,
    step,
)

POLICY = DeliveryPolicy(lease_seconds=10.0, retry_delays=(5.0, 30.0))


def change(before: str, after: str, *, started: tuple[bool, bool] = (True, True),
           result: tuple[bool, bool] = (False, False)) -> JobChange:  # fmt: skip
    return JobChange(before, after, started[0], started[1], result[0], result[1])


# ---- announcements -----------------------------------------------------------------------


def test_by_default_only_the_end_is_announced_once() -> None:
    assert announced(change("running", "succeeded", result=(False, True)), None) == ("completed",)
    assert announced(change("succeeded", "succeeded"), None) == ()  # already ended
    assert announced(change("queued", "running", started=(False, True)), None) == ()
    for end in ("failed", "canceled", "aborted"):
        assert announced(change("queued", end, started=(False, False)), None) == ("completed",)
    assert announced(change("running", "queued"), None) == ()  # a retry is not an end


def test_the_filter_chooses_among_start_output_completed() -> None:
    every = ("start", "output", "completed")
    assert announced(change("queued", "running", started=(False, True)), every) == ("start",)
    assert announced(change("running", "running"), every) == ()  # a reclaim: started before
    finished = change("running", "succeeded", result=(False, True))
    assert announced(finished, every) == ("output", "completed")
    assert announced(finished, ("output",)) == ("output",)
    assert announced(change("running", "failed"), every) == ("completed",)  # no output


def test_message_ids_name_the_job_and_the_event() -> None:
    assert message_id("job_1", "start", "running") == "msg_job_1_start"
    assert message_id("job_1", "output", "succeeded") == "msg_job_1_output"
    assert message_id("job_1", "completed", "canceled") == "msg_job_1_canceled"


@pytest.mark.parametrize(
    ("value", "why"),
    [([], "non-empty"), ("completed", "non-empty"), (["done"], "unknown"),
     (["start", "start"], "twice"), ([1], "unknown")],
)  # fmt: skip
def test_a_bad_filter_is_refused_with_a_reason(value: object, why: str) -> None:
    reason = events_filter(value)
    assert isinstance(reason, str) and why in reason


def test_a_good_filter_is_kept_as_given() -> None:
    assert events_filter(["completed", "start"]) == ("completed", "start")


# ---- a delivery's machine ----------------------------------------------------------------


def pending(at: float = 0.0, attempts: int = 0) -> DeliveryState:
    return DeliveryState(status="pending", attempts=attempts, next_at=at)


def test_a_due_delivery_is_claimed_with_a_lease_and_a_later_one_is_not() -> None:
    sent = step(pending(5.0), Claim("a"), 5.0, POLICY)
    assert (sent.status, sent.attempts, sent.lease_owner, sent.lease_expires) == ("sending", 1, "a", 15.0)
    with pytest.raises(NotClaimable):
        step(pending(5.1), Claim("a"), 5.0, POLICY)
    with pytest.raises(NotClaimable):  # a live lease: nobody else gets it
        step(sent, Claim("b"), 15.0, POLICY)


def test_failures_follow_the_schedule_then_give_up() -> None:
    state, now = pending(), 0.0
    offsets = []
    while state.status not in TERMINAL:
        now = state.next_at
        offsets.append(now)
        state = step(step(state, Claim("a"), now, POLICY), Failed("a", "HTTP 503"), now, POLICY)
    assert offsets == [0.0, 5.0, 35.0]
    assert (state.status, state.attempts, state.last_error) == ("given_up", 3, "HTTP 503")
    assert POLICY.max_attempts == 3


@pytest.mark.parametrize(
    ("event", "status"),
    [(Delivered("a"), "delivered"), (Gone("a"), "gone"), (Refused("a", "loopback"), "refused")],
)
def test_a_2xx_a_410_and_a_refusal_end_it(event: DeliveryEvent, status: str) -> None:
    ended = step(step(pending(), Claim("a"), 0.0, POLICY), event, 1.0, POLICY)
    assert ended.status == status and ended.lease_owner is None
    assert step(ended, Claim("b"), 99.0, POLICY) is ended  # terminal stays


def test_a_dead_senders_attempt_counts_and_its_late_report_is_dropped() -> None:
    held = step(pending(), Claim("dead"), 0.0, POLICY)
    assert claimable(held, 10.5) and not claimable(held, 10.0)
    taken = step(held, Claim("b"), 10.5, POLICY)
    assert (taken.attempts, taken.lease_owner, taken.last_error) == (2, "b", LEASE_EXPIRED)
    with pytest.raises(LeaseLost):
        step(taken, Delivered("dead"), 11.0, POLICY)
    last = DeliveryState("sending", attempts=3, lease_owner="dead", lease_expires=1.0)
    spent = step(last, Claim("b"), 2.0, POLICY)
    assert (spent.status, spent.last_error) == ("given_up", LEASE_EXPIRED)


def test_reports_on_a_pending_delivery_are_lost_leases() -> None:
    for event in (Delivered("a"), Gone("a"), Refused("a", "x"), Failed("a", "x")):
        with pytest.raises(LeaseLost):
            step(pending(), event, 0.0, POLICY)


def test_the_table_covers_every_status_and_event() -> None:
    assert set(TRANSITIONS) == {(s, e) for s in STATUSES for e in EVENT_TYPES}


def test_the_policy_refuses_bad_values() -> None:
    with pytest.raises(ValueError):
        DeliveryPolicy(retry_delays=(-1.0,))
    with pytest.raises(ValueError):
        DeliveryPolicy(lease_seconds=0)
    with pytest.raises(ValueError):
        DeliveryState(status="sending")  # no lease


class DeliveryMachine(RuleBasedStateMachine):
    """Random claims and reports by two workers over random time. Invariants: attempts
    never exceed the policy's maximum; only a sending delivery holds a lease; a terminal
    delivery never changes; every attempt has exactly one lease holder."""

    def __init__(self) -> None:
        super().__init__()
        self.state = pending()
        self.now = 0.0
        self.holders: list[str] = []  # the lease holder of each attempt

    @rule(dt=st.floats(0, 40), worker=st.sampled_from(["a", "b"]))
    def claim(self, dt: float, worker: str) -> None:
        self.now += dt
        before = self.state
        try:
            self.state = step(before, Claim(worker), self.now, POLICY)
        except NotClaimable:
            assert not claimable(before, self.now)
            return
        if before.status in TERMINAL:
            assert self.state is before
        elif self.state.status == "sending":
            self.holders.append(worker)
            assert self.state.attempts == len(self.holders)

    @rule(worker=st.sampled_from(["a", "b"]),
          kind=st.sampled_from(["ok", "gone", "refused", "failed"]))  # fmt: skip
    def report(self, worker: str, kind: str) -> None:
        events: dict[str, DeliveryEvent] = {
            "ok": Delivered(worker), "gone": Gone(worker), "refused": Refused(worker, "r"),
            "failed": Failed(worker, "e"),
        }  # fmt: skip
        before = self.state
        try:
            self.state = step(before, events[kind], self.now, POLICY)
        except LeaseLost:
            assert before.status != "sending" or before.lease_owner != worker
            return
        if before.status in TERMINAL:
            assert self.state is before

    @invariant()
    def bounded(self) -> None:
        assert 0 <= self.state.attempts <= POLICY.max_attempts
        assert (self.state.status == "sending") == (self.state.lease_owner is not None)


TestDeliveryMachine = DeliveryMachine.TestCase
