"""Usage aggregation: totals are the sum of rows; groups partition the totals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import InvalidRequest
from core.model import Usage
from core.usage import DIMENSIONS, Group, LedgerRow, Totals, UsageSummary, aggregate, combine


def row(at: datetime, *, model: str = "gpt-4.1", provider: str = "openai",
        project: str = "p1", status: str = "ok", usage: Usage | None = None,
        cost: str = "0.001") -> LedgerRow:
    return LedgerRow(
        at=at, tenant="t", project=project, key_id="k", model=model, provider=provider,
        deployment=f"{provider}/{model}", usage=usage or Usage(100, 10, 5, 1),
        cost=Decimal(cost), status=status, latency_ms=120, ttft_ms=None,
    )


T0 = datetime(2026, 11, 26, 13, 45, 12, tzinfo=UTC)


def test_at_must_be_aware_and_is_normalized_to_utc() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        row(datetime(2026, 1, 1))
    plus_two = datetime(2026, 11, 26, 15, 45, 12, tzinfo=timezone(timedelta(hours=2)))
    r = row(plus_two)
    assert r.at == T0 and r.at.utcoffset() == timedelta(0) and r.at.hour == 13


def test_totals_table() -> None:
    rows = [
        row(T0, usage=Usage(100, 10, 5, 1), cost="0.0000000001"),
        row(T0, usage=Usage(1, 2, 3, 4), cost="0.25", status="upstream_error"),
    ]
    summary = aggregate(rows, ())
    expected = Totals(requests=2, errors=1, input_tokens=101, output_tokens=12,
                      cached_input_tokens=8, cache_write_tokens=5, total_tokens=126,
                      cost=Decimal("0.2500000001"))
    assert summary == UsageSummary(expected, (Group((), expected),))
    assert aggregate([], ()) == UsageSummary(Totals(), ())
    assert aggregate([], ("day",)).groups == ()


def test_period_and_label_keys() -> None:
    rows = [
        row(T0),
        row(T0 + timedelta(minutes=20), model="claude-sonnet-4", provider="anthropic"),
        row(T0 + timedelta(days=6), project="p2", status="rate_limited"),
    ]
    by_hour = aggregate(rows, ("hour",))
    assert [g.key for g in by_hour.groups] == [
        (("hour", "2026-11-26T13:00:00Z"),),
        (("hour", "2026-11-26T14:00:00Z"),),
        (("hour", "2026-12-02T13:00:00Z"),),
    ]
    assert [g.key for g in aggregate(rows, ("month",)).groups] == [
        (("month", "2026-11"),), (("month", "2026-12"),)]
    by_day_model = aggregate(rows, ("day", "model"))
    assert [(g.key, g.totals.requests) for g in by_day_model.groups] == [
        ((("day", "2026-11-26"), ("model", "claude-sonnet-4")), 1),
        ((("day", "2026-11-26"), ("model", "gpt-4.1")), 1),
        ((("day", "2026-12-02"), ("model", "gpt-4.1")), 1),
    ]
    by_status = aggregate(rows, ("status", "project", "provider"))
    assert [(g.key, g.totals.errors) for g in by_status.groups] == [
        ((("status", "ok"), ("project", "p1"), ("provider", "anthropic")), 0),
        ((("status", "ok"), ("project", "p1"), ("provider", "openai")), 0),
        ((("status", "rate_limited"), ("project", "p2"), ("provider", "openai")), 1),
    ]


@pytest.mark.parametrize("group_by", [("week",), ("day", "tenant"), ("model", "model"), ("",)])
def test_invalid_dimensions_are_invalid_requests(group_by: tuple[str, ...]) -> None:
    with pytest.raises(InvalidRequest) as info:
        aggregate([row(T0)], group_by)
    assert info.value.param == "group_by" and info.value.status == 400


instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-8)), timezone(timedelta(hours=5, minutes=30))]),
)
usages = st.builds(Usage, *(st.integers(0, 10**9) for _ in range(4)))
costs = st.decimals(min_value=0, max_value=10**6, places=10, allow_nan=False,
                    allow_infinity=False)
rows = st.builds(
    row,
    instants,
    model=st.sampled_from(["gpt-4.1", "gpt-4o", "claude-sonnet-4"]),
    provider=st.sampled_from(["openai", "anthropic"]),
    project=st.sampled_from(["p1", "p2", "p3"]),
    status=st.sampled_from(["ok", "ok", "rate_limited", "upstream_error"]),
    usage=usages,
    cost=costs.map(str),
)
group_bys = st.lists(st.sampled_from(sorted(DIMENSIONS)), unique=True, max_size=4).map(tuple)


@given(st.lists(rows, max_size=30), group_bys)
def test_totals_are_the_sum_and_groups_partition_them(
    ledger: list[LedgerRow], group_by: tuple[str, ...]
) -> None:
    summary = aggregate(ledger, group_by)
    t = summary.totals
    assert t.requests == len(ledger)
    assert t.errors == sum(r.status != "ok" for r in ledger)
    assert t.input_tokens == sum(r.usage.input_tokens for r in ledger)
    assert t.output_tokens == sum(r.usage.output_tokens for r in ledger)
    assert t.cached_input_tokens == sum(r.usage.cached_input_tokens for r in ledger)
    assert t.total_tokens == sum(r.usage.total_tokens for r in ledger)
    assert t.cost == sum((r.cost for r in ledger), Decimal(0))
    grouped = sum((g.totals for g in summary.groups), Totals())
    assert grouped == t
    keys = [g.key for g in summary.groups]
    assert keys == sorted(set(keys))
    assert all(tuple(name for name, _ in k) == group_by for k in keys)
    assert all(g.totals.requests > 0 for g in summary.groups)


@given(st.lists(rows, max_size=20), group_bys)
def test_aggregate_ignores_row_order(ledger: list[LedgerRow], group_by: tuple[str, ...]) -> None:
    assert aggregate(ledger, group_by) == aggregate(list(reversed(ledger)), group_by)


@given(st.lists(rows, max_size=20), group_bys, st.data())
def test_combining_partial_sums_equals_aggregating_the_rows(
    ledger: list[LedgerRow], group_by: tuple[str, ...], data: st.DataObject
) -> None:
    # Any split of the rows (storage: the rollup's whole hours and the ledger's edges),
    # each part summed per group, combines to the summary of all the rows.
    part_of = data.draw(st.lists(st.integers(0, 2), min_size=len(ledger), max_size=len(ledger)))
    parts = [[r for r, p in zip(ledger, part_of, strict=True) if p == i] for i in range(3)]
    sums = [(g.key, g.totals) for part in parts for g in aggregate(part, group_by).groups]
    assert combine(data.draw(st.permutations(sums))) == aggregate(ledger, group_by)
