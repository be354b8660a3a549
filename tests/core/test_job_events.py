"""A job's event stream (core/job_events.py): which event a job change announces, checked
by table tests and over random runs of the job machine (core/jobs.py)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from core import job_events
from core.job_events import Seen, announced, ends, event_data
from core.jobs import (
    Cancel,
    Claim,
    ExpireLease,
    Fail,
    Heartbeat,
    JobEvent,
    JobPolicy,
    JobState,
    LeaseLost,
    NotClaimable,
    Succeed,
    apply,
    is_terminal,
    new_job,
)

POLICY = JobPolicy(lease_seconds=10, max_attempts=3, base_backoff=1, max_backoff=4)


def test_a_new_job_a_status_change_and_a_reclaim_are_announced() -> None:
    assert announced(None, Seen("queued", 0)) == "job.queued"
    assert announced(Seen("queued", 0), Seen("running", 1)) == "job.running"
    assert announced(Seen("running", 1), Seen("queued", 1)) == "job.queued"  # a retry
    assert announced(Seen("running", 1), Seen("running", 2)) == "job.running"  # reclaimed
    assert announced(Seen("running", 2), Seen("succeeded", 2)) == "job.succeeded"
    assert announced(Seen("queued", 0), Seen("aborted", 0)) == "job.aborted"


def test_a_heartbeat_or_a_cost_added_later_announces_nothing() -> None:
    assert announced(Seen("running", 1), Seen("running", 1)) is None
    assert announced(Seen("canceled", 1), Seen("canceled", 1)) is None


def test_only_terminal_events_end_the_stream() -> None:
    assert [ends("job." + s) for s in ("queued", "running")] == [False, False]
    assert all(ends("job." + s) for s in ("succeeded", "failed", "canceled", "aborted"))


def test_event_data_names_the_event_and_its_number() -> None:
    data = event_data(4, "job_1", Seen("failed", 3), {"code": "x"})
    assert data == {"type": "job.failed", "sequence_number": 4, "job_id": "job_1",
                    "status": "failed", "attempt": 3, "error": {"code": "x"}}  # fmt: skip
    assert json.loads(job_events.encode(data)) == data


WORKERS = st.sampled_from(["w1", "w2"])
EVENTS: st.SearchStrategy[JobEvent] = st.one_of(
    st.builds(Claim, WORKERS),
    st.builds(Heartbeat, WORKERS),
    st.builds(Succeed, WORKERS),
    st.builds(Fail, WORKERS, st.booleans(), st.just("boom")),
    st.just(Cancel()),
    st.just(ExpireLease()),
)


@given(
    deadline=st.one_of(st.none(), st.floats(1, 100)),
    steps=st.lists(st.tuples(EVENTS, st.floats(0, 8)), max_size=40),
)
def test_over_any_run_of_the_machine_the_events_follow_the_job(
    deadline: float | None, steps: list[tuple[JobEvent, float]]
) -> None:
    now = 0.0
    state: JobState = new_job(now, deadline=deadline)
    names = [announced(None, Seen(state.status, state.attempts))]
    for event, wait in steps:
        now += wait
        try:
            new = apply(state, event, now, POLICY)
        except (LeaseLost, NotClaimable):
            continue
        name = announced(Seen(state.status, state.attempts), Seen(new.status, new.attempts))
        if new.status != state.status:
            assert name == "job." + new.status  # every status change is announced
        if name is not None:
            names.append(name)
        state = new
    assert names[0] == "job.queued"
    # one `job.running` per run started: their count is the job's attempts
    assert names.count("job.running") == state.attempts
    # the last event is terminal exactly when the job is, and nothing follows it
    assert [n for n in names if n is not None and ends(n)] == (
        [names[-1]] if is_terminal(state.status) else []
    )
    assert names[-1] == "job." + state.status
