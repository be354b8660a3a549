"""core.lease: slices taken from a shared limit never sum to more than it had, shrink to
one request's worth as it runs out, and are whole multiples of the request's unit."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.lease import LeasePolicy, slice_units

policies = st.builds(
    LeasePolicy,
    divisor=st.integers(1, 64),
    exact_below=st.integers(1, 256),
    max_units=st.integers(1, 10_000),
)
money = st.decimals(min_value=Decimal("0"), max_value=Decimal("1000"), places=10)
units = st.decimals(min_value=Decimal("1E-10"), max_value=Decimal("5"), places=10)


@given(
    limit=money,
    policy=policies,
    steps=st.lists(
        st.tuples(st.integers(0, 7), units, st.booleans(), st.integers(0, 20)), max_size=80
    ),
)
def test_slices_of_many_holders_never_sum_to_more_than_the_limit(
    limit: Decimal, policy: LeasePolicy, steps: list[tuple[int, Decimal, bool, int]]
) -> None:
    """Eight processes lease from one budget row, serve requests from their slices and
    give back what they did not use; the row is the only arbiter."""
    available = limit
    held = [Decimal(0)] * 8
    admitted = Decimal(0)
    for holder, unit, give_back, requests in steps:
        if give_back:
            available += held[holder]
            held[holder] = Decimal(0)
            continue
        for _ in range(requests):
            if held[holder] < unit:  # the local slice cannot pay: lease another
                k = slice_units(available, unit, policy)
                if k == 0:
                    assert available < unit  # refused only when the row cannot pay
                    break
                assert 1 <= k <= max(1, policy.max_units)
                available -= k * unit
                held[holder] += k * unit
            held[holder] -= unit
            admitted += unit
        assert available >= 0
        assert sum(held) + admitted + available == limit  # nothing made up, nothing lost
        assert sum(held) + admitted <= limit


@given(available=money, unit=units, policy=policies)
def test_a_slice_fits_what_is_left_and_is_per_request_when_little_is(
    available: Decimal, unit: Decimal, policy: LeasePolicy
) -> None:
    k = slice_units(available, unit, policy)
    assert k * unit <= available
    assert (k == 0) == (available < unit)
    if unit <= available < unit * policy.exact_below:
        assert k == 1
    assert (k * unit).as_tuple().exponent >= -10  # an exact multiple: still 10 places


@given(a=money, b=money, unit=units, policy=policies)
def test_less_available_never_gives_a_larger_slice(
    a: Decimal, b: Decimal, unit: Decimal, policy: LeasePolicy
) -> None:
    low, high = sorted((a, b))
    assert slice_units(low, unit, policy) <= slice_units(high, unit, policy)


@given(level=st.floats(0, 1e9), amount=st.floats(1, 1e5), policy=policies)
def test_buckets_in_floats_get_slices_that_fit_too(
    level: float, amount: float, policy: LeasePolicy
) -> None:
    k = slice_units(level, amount, policy)
    assert k * amount <= level
    assert (k == 0) == (level < amount)


def test_examples() -> None:
    policy = LeasePolicy()  # 1/8 of what is left, per request below 32 units, <= 1024
    assert slice_units(4, 1, policy) == 1  # rpm 4: every request asks the shared row
    assert slice_units(31, 1, policy) == 1
    assert slice_units(32, 1, policy) == 4
    assert slice_units(1_000_000, 1, policy) == 1024
    assert slice_units(Decimal("10"), Decimal("0.01"), policy) == 125
    assert slice_units(Decimal("0.005"), Decimal("0.01"), policy) == 0
    with pytest.raises(ValueError, match="unit"):
        slice_units(10, 0, policy)
    with pytest.raises(ValueError, match="divisor"):
        LeasePolicy(divisor=0)
