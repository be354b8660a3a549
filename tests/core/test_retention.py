"""core/retention.py: the cut-off per store, and which budget periods may go.

- The ledger's cut-off is a UTC midnight, at most one day before `now - ledger_days`
  and never after it (property); 0 days keeps a store forever.
- No cut-off reaches into what is running: jobs and outbox cut-offs lie `days` before
  now, idempotency claims only `ttl` after their lock lapsed, streams at now (property).
- A period scope goes only when its period ended at or before the cut-off; the period
  containing `now` (day or month) and "total" never go (property).
- `period_end` reads exactly what `core.budget.period_key` writes.
- `due`: a prune runs when none ran in the last interval, or the last is in the future.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import budget, retention
from core.retention import DAY, RetentionPolicy

# 1970 .. 2200, with sub-second parts
nows = st.floats(min_value=0, max_value=7.25e9, allow_nan=False, allow_infinity=False)
days = st.integers(min_value=0, max_value=3650)
ttls = st.floats(min_value=1, max_value=1e7)
policies = st.builds(
    RetentionPolicy,
    ledger_days=days, jobs_days=days, outbox_days=days, budget_periods_days=days,
)  # fmt: skip


@given(policies, ttls, nows)
def test_the_ledger_cutoff_is_the_utc_midnight_at_or_before_now_minus_the_days(
    policy: RetentionPolicy, ttl: float, now: float
) -> None:
    cut = retention.cutoffs(policy, ttl, now)
    if policy.ledger_days == 0:
        assert cut.ledger is None
        return
    assert cut.ledger is not None
    exact = now - policy.ledger_days * DAY
    assert exact - DAY < cut.ledger <= exact
    at = datetime.fromtimestamp(cut.ledger, UTC)
    assert (at.hour, at.minute, at.second, at.microsecond) == (0, 0, 0, 0)
    assert retention.hour_text(cut.ledger).endswith("T00")


@given(policies, ttls, nows)
def test_no_cutoff_reaches_what_is_running(policy: RetentionPolicy, ttl: float, now: float) -> None:
    cut = retention.cutoffs(policy, ttl, now)
    for value, n in ((cut.jobs, policy.jobs_days), (cut.outbox, policy.outbox_days),
                     (cut.budget_periods, policy.budget_periods_days)):  # fmt: skip
        if n == 0:
            assert value is None
        else:
            assert value == now - n * DAY and value < now
    assert cut.idempotency_expired == cut.streams == cut.now == now
    assert cut.idempotency_lapsed == now - ttl < now


def test_zero_days_keeps_every_store_forever() -> None:
    cut = retention.cutoffs(RetentionPolicy(0, 0, 0, 0), 60.0, 1e9)
    assert (cut.ledger, cut.jobs, cut.outbox, cut.budget_periods) == (None, None, None, None)
    assert not retention.period_prunable("key:k:2001-01", cut)


@pytest.mark.parametrize(
    ("field", "value"),
    [("ledger_days", -1), ("jobs_days", 1.5), ("outbox_days", True),
     ("interval_seconds", -1.0), ("batch_rows", 0)],
)  # fmt: skip
def test_bad_settings_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"retention.{field}"):
        RetentionPolicy(**{field: value})  # type: ignore[arg-type]


instants = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2199, 12, 1), timezones=st.just(UTC)
)
bases = st.sampled_from(["key:k1", "budget:project:t:p", "budget:tenant:t"])


@given(bases, st.sampled_from(["day", "month"]), instants)
def test_period_end_reads_what_period_key_writes(base: str, period: str, at: datetime) -> None:
    scope = budget.period_key(base, period, at)  # type: ignore[arg-type]
    end = retention.period_end(scope)
    assert end is not None
    assert at.timestamp() < end  # `at` is inside the period
    if period == "day":
        start = at.replace(hour=0, minute=0, second=0, microsecond=0)
        assert end == (start + timedelta(days=1)).timestamp()
    else:
        nxt = datetime.fromtimestamp(end, UTC)
        assert (nxt.day, nxt.hour) == (1, 0)
        assert (nxt - timedelta(days=1)).month == at.month


@given(bases, st.sampled_from(["day", "month", "total"]), instants, days.filter(bool), nows)
def test_a_period_goes_only_once_it_ended_before_the_cutoff(
    base: str, period: str, at: datetime, n: int, now: float
) -> None:
    scope = budget.period_key(base, period, at)  # type: ignore[arg-type]
    cut = retention.cutoffs(RetentionPolicy(budget_periods_days=n), 60.0, now)
    end = retention.period_end(scope)
    assert retention.period_prunable(scope, cut) == (end is not None and end <= now - n * DAY)
    # the current period is never pruned
    current = budget.period_key(base, period, datetime.fromtimestamp(now, UTC))  # type: ignore[arg-type]
    assert not retention.period_prunable(current, cut)


@pytest.mark.parametrize(
    "scope",
    ["key:k:total", "rl:k:2001-01", "webhooks:x:2001-01", "key:k:2001-13", "key:k:2001-02-30",
     "key:k:01-01", "key:k", "budget:tenant:t:２００１-01", "key:k:2001-1-01"],
)  # fmt: skip
def test_scopes_that_are_not_past_periods_never_go(scope: str) -> None:
    cut = retention.cutoffs(RetentionPolicy(budget_periods_days=1), 60.0, 7e9)
    assert not retention.period_prunable(scope, cut)


def test_due() -> None:
    assert retention.due(None, 100.0, 60.0)
    assert not retention.due(50.0, 100.0, 60.0)
    assert retention.due(40.0, 100.0, 60.0)
    assert retention.due(200.0, 100.0, 60.0)  # a clock set back does not stop pruning
