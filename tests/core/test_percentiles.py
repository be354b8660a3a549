"""core.percentiles: bins cover every value once; estimates stay inside the true value's bin."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import percentiles as pc

values = st.lists(st.integers(min_value=-5, max_value=2_000_000), min_size=1, max_size=300)
quantiles = st.floats(min_value=0.001, max_value=1.0)


def nearest_rank(sample: list[int], q: float) -> int:
    ordered = sorted(sample)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@given(st.integers(min_value=-10, max_value=10_000_000))
def test_every_value_falls_in_exactly_the_bin_whose_range_holds_it(value: int) -> None:
    b = pc.bin_of(value)
    low, high = pc.bin_range(b)
    assert 0 <= b < pc.BINS
    assert value < high if high is not None else value >= low
    if b > 0:
        assert value >= low


@given(values, quantiles)
def test_estimate_lies_in_the_bin_of_the_exact_nearest_rank_percentile(sample: list[int], q: float) -> None:
    estimate = pc.percentile(pc.histogram(sample), q)
    assert estimate is not None
    low, high = pc.bin_range(pc.bin_of(nearest_rank(sample, q)))
    assert low <= estimate <= (high if high is not None else low)


@given(values, st.lists(quantiles, min_size=2, max_size=5))
def test_estimates_never_decrease_with_q(sample: list[int], qs: list[float]) -> None:
    h = pc.histogram(sample)
    estimates = [pc.percentile(h, q) for q in sorted(qs)]
    assert estimates == sorted(estimates)  # type: ignore[type-var]


@given(values, values)
def test_merging_histograms_is_the_histogram_of_both_samples(a: list[int], b: list[int]) -> None:
    assert pc.merge([pc.histogram(a), pc.histogram(b)]) == pc.histogram(a + b)


@given(st.lists(st.integers(0, 50), max_size=pc.BINS), st.lists(quantiles, max_size=5))
def test_quantiles_of_bin_counts_equal_percentile_of_each_q(counts: list[int], qs: list[float]) -> None:
    qs = sorted(qs)
    by_bin = dict(enumerate(counts))
    assert pc.quantiles(counts, qs) == [pc.percentile(by_bin, q) for q in qs]


def test_quantiles_refuse_bad_input() -> None:
    assert pc.quantiles([0] * pc.BINS, (0.5, 0.9)) == [None, None]
    for bad in ((0.9, 0.5), (0.0,), (float("nan"),)):
        with pytest.raises(ValueError):
            pc.quantiles([1], bad)
    with pytest.raises(ValueError):
        pc.quantiles([1] * (pc.BINS + 1), (0.5,))


def test_bounds_grow_and_no_bin_past_ten_ms_is_more_than_twice_its_start() -> None:
    assert list(pc.BOUNDS_MS) == sorted(set(pc.BOUNDS_MS))
    for low, high in zip(pc.BOUNDS_MS, pc.BOUNDS_MS[1:], strict=False):
        if low >= 10:
            assert high / low <= 2.0


def test_empty_histograms_have_no_percentile_and_bad_q_is_refused() -> None:
    assert pc.percentile({}, 0.5) is None
    assert pc.percentile({3: 0}, 0.5) is None
    for q in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            pc.percentile({1: 1}, q)
    with pytest.raises(ValueError):
        pc.bin_range(pc.BINS)


def test_a_known_sample() -> None:
    h = pc.histogram([100] * 90 + [1000] * 10)  # 100 ms is bin [100, 150); 1000 is [1000, 1500)
    assert 100 <= pc.percentile(h, 0.5) < 150  # type: ignore[operator]
    assert 1000 <= pc.percentile(h, 0.95) < 1500  # type: ignore[operator]
    assert pc.percentile({pc.BINS - 1: 4}, 0.99) == pc.BOUNDS_MS[-1]  # open-ended last bin
