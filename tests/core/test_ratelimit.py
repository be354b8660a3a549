"""Token buckets: grants never exceed capacity + rate x elapsed, and the header values."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.ratelimit import (
    Allowed,
    Bucket,
    BucketSpec,
    Denied,
    adjust,
    format_duration,
    headers,
    never_fits,
    refill,
    retry_after_header,
    take,
)

RPM60 = BucketSpec.per_minute(60)  # capacity 60, one per second


def test_per_minute_spec() -> None:
    spec = BucketSpec.per_minute(600)
    assert spec.capacity == 600
    assert spec.per_second == 10


@pytest.mark.parametrize(
    ("capacity", "per_second"),
    [(0, 1), (1, 0), (-1, 1), (1, -1), (math.inf, 1), (1, math.nan)],
)
def test_spec_rejects_non_positive_or_non_finite(capacity: float, per_second: float) -> None:
    with pytest.raises(ValueError):
        BucketSpec(capacity, per_second)


def test_first_take_starts_full() -> None:
    decision, bucket = take(RPM60, None, 1, now=100.0)
    assert decision == Allowed(remaining=59, reset_after=1.0)
    assert bucket == Bucket(59, 100.0)


def test_denied_reports_wait_and_keeps_level() -> None:
    bucket = Bucket(level=0.5, updated_at=10.0)
    decision, after = take(RPM60, bucket, 2, now=10.0)
    assert decision == Denied(retry_after=1.5, remaining=0.5, reset_after=59.5)
    assert after == bucket


def test_denied_refreshes_updated_at_with_refilled_level() -> None:
    decision, after = take(RPM60, Bucket(0.0, 10.0), 5, now=12.0)
    assert isinstance(decision, Denied)
    assert after == Bucket(2.0, 12.0)
    assert decision.retry_after == pytest.approx(3.0)
    # storing the refreshed bucket loses nothing: the same grant comes at the same time
    ok, _ = take(RPM60, after, 5, now=15.0)
    assert isinstance(ok, Allowed)


def test_refill_caps_at_capacity() -> None:
    assert refill(RPM60, Bucket(10, 0.0), now=1000.0) == Bucket(60, 1000.0)


def test_backwards_clock_never_refills_nor_rewinds() -> None:
    bucket = Bucket(level=3.0, updated_at=50.0)
    assert refill(RPM60, bucket, now=20.0) == bucket
    decision, after = take(RPM60, bucket, 1, now=20.0)
    assert isinstance(decision, Allowed)
    assert after == Bucket(2.0, 50.0)


def test_amount_over_capacity_never_fits() -> None:
    spec = BucketSpec.per_minute(1000)
    assert never_fits(spec, 1001)
    assert not never_fits(spec, 1000)
    decision, after = take(spec, None, 1001, now=0.0)
    assert isinstance(decision, Denied)
    assert decision.retry_after == math.inf
    assert decision.remaining == 1000
    assert decision.reset_after == 0
    assert after == Bucket(1000, 0.0)
    with pytest.raises(ValueError):
        retry_after_header(decision.retry_after)


def test_whole_capacity_fits_when_full() -> None:
    decision, after = take(RPM60, None, 60, now=0.0)
    assert decision == Allowed(remaining=0, reset_after=60.0)
    assert after.level == 0


@pytest.mark.parametrize("amount", [-1, math.nan, math.inf])
def test_take_rejects_bad_amounts(amount: float) -> None:
    with pytest.raises(ValueError):
        take(RPM60, None, amount, now=0.0)


def test_adjust_charges_refunds_caps_and_goes_into_debt() -> None:
    spec = BucketSpec.per_minute(600)  # 10 per second
    bucket = Bucket(100.0, 0.0)
    assert adjust(spec, bucket, 50, now=0.0) == Bucket(50.0, 0.0)
    assert adjust(spec, bucket, -50, now=0.0) == Bucket(150.0, 0.0)
    assert adjust(spec, bucket, -10_000, now=0.0) == Bucket(600.0, 0.0)
    debt = adjust(spec, bucket, 300, now=1.0)  # refilled to 110 first
    assert debt == Bucket(-190.0, 1.0)
    decision, _ = take(spec, debt, 10, now=1.0)
    assert isinstance(decision, Denied)
    assert decision.retry_after == pytest.approx(20.0)
    assert headers("tokens", spec, decision)["x-ratelimit-remaining-tokens"] == "0"
    assert adjust(spec, None, 1, now=5.0) == Bucket(599.0, 5.0)


def test_bucket_json_round_trip() -> None:
    bucket = Bucket(level=-12.345678901234567, updated_at=1_750_000_000.123456)
    assert Bucket.from_dict(json.loads(json.dumps(bucket.to_dict()))) == bucket


@pytest.mark.parametrize(
    "data",
    [{}, {"level": "1", "updated_at": 0}, {"level": 1, "updated_at": True},
     {"level": 1, "updated_at": float("nan")}],
)
def test_bucket_from_dict_rejects_bad_state(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Bucket.from_dict(data)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-3, "0s"),
        (0.012, "12ms"),
        (0.0121, "13ms"),
        (0.0004, "1ms"),
        (0.999, "999ms"),
        (0.9999, "1s"),
        (1, "1s"),
        (1.5, "1.5s"),
        (17.219, "17.219s"),
        (59.9991, "1m0s"),
        (60, "1m0s"),
        (90.5, "1m30.5s"),
        (179.56, "2m59.56s"),
        (360, "6m0s"),
        (3600, "1h0m0s"),
        (3723.25, "1h2m3.25s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "1"), (0.001, "1"), (1, "1"), (1.0000000001, "1"), (1.2, "2"), (59.5, "60")],
)
def test_retry_after_header(seconds: float, text: str) -> None:
    assert retry_after_header(seconds) == text


def test_headers_table() -> None:
    spec = BucketSpec.per_minute(60)
    decision, _ = take(spec, Bucket(10.7, 0.0), 1, now=0.0)
    assert headers("requests", spec, decision) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-reset-requests": "50.3s",
    }
    denied = Denied(retry_after=1.0, remaining=-4.2, reset_after=360.0)
    assert headers("tokens", BucketSpec(1.5, 1.0), denied) == {
        "x-ratelimit-limit-tokens": "1.5",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "6m0s",
    }


# ---- properties ------------------------------------------------------------------------

specs = st.builds(
    BucketSpec,
    capacity=st.floats(min_value=1, max_value=1e6),
    per_second=st.floats(min_value=1e-3, max_value=1e4),
)
ops = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=2e6),  # amount
        st.floats(min_value=-100, max_value=100),  # time step (may go backwards)
    ),
    max_size=60,
)


def _tolerance(spec: BucketSpec, elapsed: float, n: int) -> float:
    return 1e-9 * (spec.capacity + spec.per_second * elapsed) * (n + 1)


@given(spec=specs, steps=ops, start=st.floats(min_value=-1e6, max_value=1e9))
def test_grants_never_exceed_capacity_plus_rate_times_elapsed(
    spec: BucketSpec, steps: list[tuple[float, float]], start: float
) -> None:
    bucket: Bucket | None = None
    now = start
    latest = start  # the clock only counts forward progress
    granted = 0.0
    for amount, step in steps:  # the first take is at `start`, when the bucket is created
        latest = max(latest, now)
        decision, bucket = take(spec, bucket, amount, now)
        now += step
        if isinstance(decision, Allowed):
            granted += amount
            assert amount <= spec.capacity
        else:
            assert decision.retry_after > 0
            assert math.isinf(decision.retry_after) == never_fits(spec, amount)
        assert bucket.updated_at == latest
        assert bucket.level <= spec.capacity
        for kind in ("requests", "tokens"):
            value = headers(kind, spec, decision)[f"x-ratelimit-remaining-{kind}"]
            assert int(value) >= 0
        elapsed = latest - start
        assert granted <= spec.capacity + spec.per_second * elapsed + _tolerance(
            spec, elapsed, len(steps)
        )


@given(
    spec=specs,
    level=st.floats(min_value=-1e6, max_value=1e6),
    at=st.floats(min_value=0, max_value=1e6),
    back=st.floats(min_value=0, max_value=1e6),
    amount=st.floats(min_value=0, max_value=1e6),
)
def test_backwards_clock_never_grants_extra(
    spec: BucketSpec, level: float, at: float, back: float, amount: float
) -> None:
    bucket = Bucket(min(level, spec.capacity), at)
    earlier, _ = take(spec, bucket, amount, at - back)
    same, _ = take(spec, bucket, amount, at)
    assert earlier == same


@given(
    spec=specs,
    level=st.floats(min_value=-1e6, max_value=1e6),
    amount=st.floats(min_value=0, max_value=1e6),
)
def test_waiting_retry_after_grants(spec: BucketSpec, level: float, amount: float) -> None:
    bucket = Bucket(min(level, spec.capacity), 0.0)
    decision, after = take(spec, bucket, amount, 0.0)
    if isinstance(decision, Denied) and not math.isinf(decision.retry_after):
        later, _ = take(spec, after, amount, decision.retry_after * (1 + 1e-9) + 1e-9)
        assert isinstance(later, Allowed)


@given(seconds=st.floats(min_value=0, max_value=1e7))
def test_duration_parses_back_to_at_least_the_wait(seconds: float) -> None:
    text = format_duration(seconds)
    total = 0.0
    rest = text
    for unit, scale in (("h", 3600.0), ("ms", 0.001), ("m", 60.0), ("s", 1.0)):
        if unit in rest:
            head, rest = rest.split(unit, 1)
            total += float(head) * scale
    assert rest == ""
    assert seconds - 1e-6 <= total < seconds + 0.001 + 1e-6 * max(1.0, seconds)


@given(seconds=st.floats(min_value=0, max_value=1e7))
def test_retry_after_is_whole_seconds_at_least_one(seconds: float) -> None:
    value = int(retry_after_header(seconds))
    assert value >= 1
    assert value >= seconds - 1e-6
    assert value < max(1.0, seconds) + 1
