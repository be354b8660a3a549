"""Admission over both of a key's buckets is all or nothing (`ratelimit.take_all`)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from core import ratelimit
from core.ratelimit import Bucket, Need

needs = st.lists(
    st.builds(Need, st.sampled_from(["requests", "tokens"]), st.integers(1, 100),
              st.integers(0, 150).map(float)),
    min_size=1, max_size=2, unique_by=lambda n: n.kind,
).map(tuple)
states = st.dictionaries(
    st.sampled_from(["requests", "tokens"]),
    st.builds(Bucket, st.floats(-50, 100), st.floats(0, 100)),
)
nows = st.floats(0, 200)


@given(needs, states, nows)
def test_every_bucket_is_charged_or_none_is(
    asked: tuple[Need, ...], buckets: dict[str, Bucket], now: float
) -> None:
    admission, after = ratelimit.take_all(asked, buckets, now)
    refilled = {
        n.kind: ratelimit.refill(ratelimit.BucketSpec.per_minute(n.per_minute), buckets.get(n.kind), now)
        for n in asked
    }
    if isinstance(admission, ratelimit.Admitted):
        for n in asked:
            assert math.isclose(after[n.kind].level, refilled[n.kind].level - n.amount, abs_tol=1e-9)
            assert refilled[n.kind].level >= n.amount
    elif isinstance(admission, ratelimit.Refusal):
        for n in asked:  # nothing was taken from any bucket (only brought up to date)
            assert after[n.kind] == refilled[n.kind]
        assert 0 < admission.retry_after < math.inf
        assert any(refilled[n.kind].level < n.amount for n in asked)
    else:  # too large for a limit: refused before any bucket is looked at
        assert after == buckets
        assert any(n.amount > n.per_minute for n in asked)


@given(needs, states, nows)
def test_state_round_trips(asked: tuple[Need, ...], buckets: dict[str, Bucket], now: float) -> None:
    _, after = ratelimit.take_all(asked, buckets, now)
    assert ratelimit.buckets_from_dict(ratelimit.buckets_to_dict(after)) == after


def test_a_tokens_refusal_leaves_the_request_count_alone() -> None:
    asked = (Need("requests", 10, 1.0), Need("tokens", 100, 80.0))
    admission, after = ratelimit.take_all(asked, {"tokens": Bucket(50.0, 0.0)}, 0.0)
    assert isinstance(admission, ratelimit.Refusal) and admission.kind == "tokens"
    assert after["requests"].level == 10.0
    assert admission.headers["x-ratelimit-remaining-requests"] == "10"
    assert admission.headers["x-ratelimit-remaining-tokens"] == "50"


def _take_all_by_parts(
    asked: tuple[Need, ...], buckets: dict[str, Bucket], now: float
) -> tuple[ratelimit.Admission, dict[str, Bucket]]:
    """The rules spelled out with `take`, `refill` and `headers` one need at a time."""
    specs = [ratelimit.BucketSpec.per_minute(n.per_minute) for n in asked]
    for n, spec in zip(asked, specs, strict=True):
        if ratelimit.never_fits(spec, n.amount):
            return ratelimit.TooLarge(n.kind, n.per_minute, n.amount), dict(buckets)
    taken = [ratelimit.take(spec, buckets.get(n.kind), n.amount, now) for n, spec in zip(asked, specs, strict=True)]
    denied = [(n, d) for n, (d, _) in zip(asked, taken, strict=True) if isinstance(d, ratelimit.Denied)]
    new, said = dict(buckets), {}
    for n, spec, (decision, after) in zip(asked, specs, taken, strict=True):
        if denied:
            after = ratelimit.refill(spec, buckets.get(n.kind), now)
            decision = ratelimit.Allowed(after.level, max(0.0, (spec.capacity - after.level) / spec.per_second))
        new[n.kind] = after
        said.update(ratelimit.headers(n.kind, spec, decision))
    if denied:
        n, d = denied[0]
        return ratelimit.Refusal(n.kind, n.per_minute, d.retry_after, said), new
    return ratelimit.Admitted(said), new


@given(needs, states, nows)
def test_take_all_is_take_on_each_need(asked: tuple[Need, ...], buckets: dict[str, Bucket], now: float) -> None:
    assert ratelimit.take_all(asked, buckets, now) == _take_all_by_parts(asked, buckets, now)
