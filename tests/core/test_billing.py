"""Billing is exact: checked against Fraction arithmetic and the one rounding rule."""

from __future__ import annotations

from decimal import Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.billing import QUANTUM, cost, format_usd, worst_case_cost
from core.catalog import Price
from core.model import Usage

GPT41 = Price(Decimal("2.00"), Decimal("8.00"), Decimal("0.50"), None, "openai-2025-07")
SONNET = Price(Decimal("3"), Decimal("15"), Decimal("0.30"), Decimal("3.75"), "a")
MINI = Price(Decimal("0.15"), Decimal("0.60"), Decimal("0.075"))

prices = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False,
                     allow_infinity=False)
any_prices = st.decimals(min_value=0, max_value=10**6, allow_nan=False, allow_infinity=False)
tokens = st.integers(min_value=0, max_value=10**12)


def price_strategy(values: st.SearchStrategy[Decimal]) -> st.SearchStrategy[Price]:
    return st.builds(Price, values, values, st.none() | values, st.none() | values)


usages = st.builds(Usage, tokens, tokens, tokens, tokens, st.integers(0, 10**6))


def reference(usage: Usage, price: Price) -> Decimal:
    """The rule, computed with Fractions and Python's half-even `round`."""
    cached = price.input if price.cached_input is None else price.cached_input
    write = price.input if price.cache_write is None else price.cache_write
    exact = (
        usage.input_tokens * Fraction(price.input)
        + usage.cached_input_tokens * Fraction(cached)
        + usage.cache_write_tokens * Fraction(write)
        + usage.output_tokens * Fraction(price.output)
    ) / 1_000_000
    units = round(exact * 10**10)  # Fraction rounding is half-to-even
    return Decimal(units).scaleb(-10)


TABLE = [
    (Usage(1_000_000, 1_000_000), GPT41, "10"),
    (Usage(1000, 500), GPT41, "0.006"),
    (Usage(1, 0), GPT41, "0.000002"),
    (Usage(0, 0, cached_input_tokens=1000), GPT41, "0.0005"),
    (Usage(0, 0, cache_write_tokens=1000), GPT41, "0.002"),  # no write price: input price
    (Usage(0, 0, cache_write_tokens=1000), SONNET, "0.00375"),
    (Usage(100, 10, 1000, 2000), SONNET, "0.00825"),  # 300+150+300+7500 per 1M
    (Usage(1, 0, cached_input_tokens=1), MINI, "0.000000225"),
    (Usage(0, 0), SONNET, "0"),
    # rounding: 1 token at 0.00000000005 USD/1M is 5e-17 -> 0; ties go to even
    (Usage(1, 0), Price(Decimal("0.00005"), Decimal(0)), "0"),
    (Usage(5, 0), Price(Decimal("0.00001"), Decimal(0)), "0"),  # 0.5e-10 -> 0 (even)
    (Usage(15, 0), Price(Decimal("0.00001"), Decimal(0)), "0.0000000002"),  # 1.5e-10 -> 2e-10
    (Usage(25, 0), Price(Decimal("0.00001"), Decimal(0)), "0.0000000002"),  # 2.5e-10 -> 2e-10
]


@pytest.mark.parametrize(("usage", "price", "expected"), TABLE)
def test_cost_table(usage: Usage, price: Price, expected: str) -> None:
    got = cost(usage, price)
    assert got == Decimal(expected)
    assert got.as_tuple().exponent == -10  # always quantized to 1e-10


@given(usages, price_strategy(prices))
def test_cost_equals_fraction_reference(usage: Usage, price: Price) -> None:
    assert cost(usage, price) == reference(usage, price)


@given(usages, price_strategy(any_prices))
def test_cost_is_exact_for_any_decimal_price(usage: Usage, price: Price) -> None:
    assert cost(usage, price) == reference(usage, price)


@given(usages, price_strategy(prices))
def test_cost_ignores_a_tiny_ambient_context(usage: Usage, price: Price) -> None:
    expected = reference(usage, price)
    with localcontext() as ctx:
        ctx.prec = 3
        assert cost(usage, price) == expected


@given(usages, usages, price_strategy(prices))
def test_cost_is_additive_up_to_one_rounding_each(a: Usage, b: Usage, price: Price) -> None:
    difference = abs(cost(a + b, price) - cost(a, price) - cost(b, price))
    assert difference <= QUANTUM


@given(tokens, tokens, price_strategy(prices))
def test_worst_case_cost_is_input_plus_max_output(inp: int, out: int, price: Price) -> None:
    exact = (inp * Fraction(price.input) + out * Fraction(price.output)) / 1_000_000
    assert worst_case_cost(inp, out, price) == Decimal(round(exact * 10**10)).scaleb(-10)


@given(usages, st.integers(0, 10**6), st.integers(0, 10**6), price_strategy(prices))
def test_worst_case_covers_any_usage_within_it(
    usage: Usage, more_in: int, more_out: int, price: Price
) -> None:
    # cache prices at or below the input price (as every real deployment has)
    capped = Price(
        price.input, price.output,
        None if price.cached_input is None else min(price.cached_input, price.input),
        None if price.cache_write is None else min(price.cache_write, price.input),
    )
    worst = worst_case_cost(usage.total_input_tokens + more_in, usage.output_tokens + more_out,
                            capped)
    assert cost(usage, capped) <= worst


def test_worst_case_table() -> None:
    assert worst_case_cost(1000, 4096, GPT41) == Decimal("0.034768")
    assert worst_case_cost(0, 0, SONNET) == 0


FORMATS = [
    ("0.0000300000", "0.00003"),
    ("0E-10", "0"),
    ("-0E-10", "0"),
    ("12.5000000000", "12.5"),
    ("10.0000000000", "10"),
    ("100", "100"),
    ("1E+2", "100"),
    ("1E-12", "0.000000000001"),
    ("123456789012345678901234567890.1", "123456789012345678901234567890.1"),
    ("-1.50", "-1.5"),
]


@pytest.mark.parametrize(("value", "expected"), FORMATS)
def test_format_usd(value: str, expected: str) -> None:
    assert format_usd(Decimal(value)) == expected


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_format_usd_round_trips_without_exponent(value: Decimal) -> None:
    text = format_usd(value)
    assert "E" not in text.upper() and Decimal(text) == value
    assert not ("." in text and text.endswith("0"))
