"""Budgets: reservations never overcommit the limit; every operation is idempotent per rid."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_FLOOR, Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
)

from core.budget import (
    CLOSED_MEMORY,
    UNBOUNDED_TOKENS,
    BudgetState,
    Refused,
    Reserved,
    Settlement,
    max_output_tokens_that_fit,
    period_key,
    release,
    reserve,
    settle,
    status,
    with_limit,
)
from core.catalog import Price

D = Decimal


def test_reserve_grants_up_to_available() -> None:
    state = BudgetState(limit=D("1.00"))
    decision, state = reserve(state, "a", D("0.60"))
    assert decision == Reserved("a", D("0.60"))
    assert state.available == D("0.40")
    decision, after = reserve(state, "b", D("0.41"))
    assert decision == Refused("b", "insufficient", D("0.40"))
    assert after == state
    decision, state = reserve(state, "b", D("0.40"))
    assert isinstance(decision, Reserved)
    assert state.available == 0
    assert state.reserved == D("1.00")


def test_reserve_is_idempotent_with_the_existing_amount() -> None:
    _, state = reserve(BudgetState(limit=D(5)), "a", D(2))
    decision, again = reserve(state, "a", D(3))
    assert decision == Reserved("a", D(2))
    assert again == state


def test_negative_amounts_are_errors() -> None:
    state = BudgetState(limit=D(5))
    with pytest.raises(ValueError):
        reserve(state, "a", D(-1))
    with pytest.raises(ValueError):
        settle(state, "a", D("-0.01"))
    with pytest.raises(ValueError):
        reserve(state, "a", D("NaN"))
    with pytest.raises(ValueError):
        BudgetState(limit=D(-1))


def test_settle_charges_real_cost_and_reports_overrun() -> None:
    _, state = reserve(BudgetState(limit=D(1)), "a", D("0.30"))
    result, state = settle(state, "a", D("0.45"))
    assert result == Settlement("a", "settled", D("0.30"), D("0.45"), D("0.15"))
    assert result.changed
    assert state.spent == D("0.45")
    assert state.reservations == ()
    assert status(state, "a") == "closed"
    under, _ = settle(reserve(BudgetState(limit=D(1)), "b", D("0.30"))[1], "b", D("0.10"))
    assert under.overrun == 0


def test_overrun_past_the_limit_leaves_nothing_available() -> None:
    _, state = reserve(BudgetState(limit=D(1)), "a", D(1))
    _, state = settle(state, "a", D(3))
    assert state.spent == D(3)
    assert state.available == 0
    decision, _ = reserve(state, "b", D("0.01"))
    assert isinstance(decision, Refused)
    decision, _ = reserve(state, "c", D(0))
    assert isinstance(decision, Reserved)


def test_settle_unknown_and_closed_change_nothing() -> None:
    state = BudgetState(limit=D(1))
    result, after = settle(state, "ghost", D(1))
    assert result == Settlement("ghost", "unknown")
    assert not result.changed
    assert after == state
    _, state = reserve(state, "a", D("0.5"))
    _, state = settle(state, "a", D("0.2"))
    result, after = settle(state, "a", D("0.2"))
    assert result.outcome == "closed"
    assert after == state


def test_closed_rids_cannot_be_reserved_again() -> None:
    _, state = reserve(BudgetState(limit=D(1)), "a", D("0.5"))
    state = release(state, "a")
    assert state.reserved == 0
    assert release(state, "a") == state
    decision, after = reserve(state, "a", D("0.1"))
    assert decision == Refused("a", "closed", D(1))
    assert after == state


def test_closed_memory_is_bounded() -> None:
    state = BudgetState(limit=D(1000))
    for i in range(CLOSED_MEMORY + 10):
        _, state = reserve(state, f"r{i}", D(0))
        state = release(state, f"r{i}")
    assert len(state.closed) == CLOSED_MEMORY
    assert state.closed[0] == "r10"
    assert status(state, "r9") == "unknown"
    assert status(state, f"r{CLOSED_MEMORY + 9}") == "closed"


def test_with_limit_keeps_reservations() -> None:
    _, state = reserve(BudgetState(limit=D(10)), "a", D(4))
    lowered = with_limit(state, D(3))
    assert lowered.reservations == state.reservations
    assert lowered.available == 0
    assert with_limit(state, D(10)) is state
    with pytest.raises(ValueError):
        with_limit(state, D(-1))


def test_json_round_trip_table() -> None:
    _, state = reserve(BudgetState(limit=D("12.5000"), spent=D("1E-10")), "a", D("0.3300"))
    _, state = reserve(state, "b", D("2"))
    state = release(state, "b")
    data = json.loads(json.dumps(state.to_dict()))
    assert data == {
        "limit": "12.5000",
        "spent": "1E-10",
        "reservations": [["a", "0.3300"]],
        "closed": ["b"],
    }
    back = BudgetState.from_dict(data)
    assert back == state
    assert str(back.limit) == "12.5000"


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"limit": 5},
        {"limit": "five"},
        {"limit": "5", "reservations": [["a"]]},
        {"limit": "5", "reservations": [["a", "1"], ["a", "2"]]},
        {"limit": "5", "reservations": [["a", "-1"]]},
        {"limit": "5", "closed": [1]},
    ],
)
def test_from_dict_rejects_bad_state(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BudgetState.from_dict(data)


# ---- max_output_tokens_that_fit ---------------------------------------------------------


def _fits(available: Decimal, price: Price, input_tokens: int, n: int) -> bool:
    cost = (
        Fraction(input_tokens) * Fraction(price.input) + Fraction(n) * Fraction(price.output)
    ) / 10**6
    return cost <= Fraction(available)


@pytest.mark.parametrize(
    ("available", "price_in", "price_out", "input_tokens", "expected"),
    [
        ("1", "2", "8", 100_000, 100_000),  # 0.2 input, 0.8 left at 8e-6 each
        ("0.20", "2", "8", 100_000, 0),  # exactly the input
        ("0.19", "2", "8", 100_000, 0),  # not even the input
        ("0.200008", "2", "8", 100_000, 1),
        ("0.200007", "2", "8", 100_000, 0),
        ("-1", "2", "8", 0, 0),
        ("1", "0", "0", 10**9, UNBOUNDED_TOKENS),
        ("1", "3", "15", 0, 66_666),
    ],
)
def test_max_output_tokens_table(
    available: str, price_in: str, price_out: str, input_tokens: int, expected: int
) -> None:
    price = Price(input=D(price_in), output=D(price_out))
    assert max_output_tokens_that_fit(D(available), price, input_tokens) == expected


money = st.decimals(min_value=0, max_value=10_000, places=10, allow_nan=False, allow_infinity=False)
prices = st.decimals(
    min_value=D("0.0001"), max_value=200, places=4, allow_nan=False, allow_infinity=False
)


@given(available=money, p_in=prices, p_out=prices, input_tokens=st.integers(0, 10**7))
def test_max_output_tokens_exact_against_fraction(
    available: Decimal, p_in: Decimal, p_out: Decimal, input_tokens: int
) -> None:
    price = Price(input=p_in, output=p_out)
    n = max_output_tokens_that_fit(available, price, input_tokens)
    assert n >= 0
    if n > 0:
        assert _fits(available, price, input_tokens, n)
    else:
        # nothing fits beyond the input (or the input itself does not fit)
        assert not _fits(available, price, input_tokens, 1)
    assert not _fits(available, price, input_tokens, n + 1)
    expected = (Fraction(available) * 10**6 - input_tokens * Fraction(p_in)) / Fraction(p_out)
    assert n == max(0, math.floor(expected))


# ---- period keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "at", "key"),
    [
        ("month", datetime(2026, 11, 5, 12, tzinfo=UTC), "key:abc:2026-11"),
        ("day", datetime(2026, 11, 5, 12, tzinfo=UTC), "key:abc:2026-11-05"),
        ("total", datetime(2026, 11, 5, 12, tzinfo=UTC), "key:abc:total"),
        # 01:00 on Dec 1 at UTC+2 is still November in UTC
        ("month", datetime(2026, 12, 1, 1, tzinfo=timezone(timedelta(hours=2))), "key:abc:2026-11"),
        ("day", datetime(2026, 12, 1, 1, tzinfo=timezone(timedelta(hours=2))), "key:abc:2026-11-30"),
    ],
)
def test_period_key(period: str, at: datetime, key: str) -> None:
    assert period_key("key:abc", period, at) == key  # type: ignore[arg-type]


def test_period_key_rejects_naive_and_unknown() -> None:
    with pytest.raises(ValueError):
        period_key("key:abc", "month", datetime(2026, 11, 5))
    with pytest.raises(ValueError):
        period_key("key:abc", "week", datetime(2026, 11, 5, tzinfo=UTC))  # type: ignore[arg-type]


# ---- stateful ---------------------------------------------------------------------------

amounts = st.decimals(min_value=0, max_value=100, places=2, allow_nan=False, allow_infinity=False)


class BudgetMachine(RuleBasedStateMachine):
    """Reserve, settle (actual <= reserved), release, repeat; the books always balance."""

    open_rids = Bundle("open_rids")
    closed_rids = Bundle("closed_rids")

    def __init__(self) -> None:
        super().__init__()
        self.state = BudgetState(limit=D(0))
        self.spent = D(0)  # model: sum of settled actuals
        self.counter = 0

    @rule(limit=amounts)
    def start_limit(self, limit: Decimal) -> None:
        if self.counter == 0:
            self.state = with_limit(self.state, limit * 3)
            self.counter = 1

    @rule(target=open_rids, amount=amounts)
    def reserve_new(self, amount: Decimal) -> MultipleResults[str]:
        self.counter += 1
        rid = f"r{self.counter}"
        before = self.state
        decision, self.state = reserve(self.state, rid, amount)
        if amount <= before.available:
            assert decision == Reserved(rid, amount)
            assert self.state.reserved == before.reserved + amount
            return multiple(rid)
        assert decision == Refused(rid, "insufficient", before.available)
        assert self.state == before
        return multiple()

    @rule(rid=open_rids, amount=amounts)
    def reserve_again(self, rid: str, amount: Decimal) -> None:
        before = self.state
        decision, self.state = reserve(self.state, rid, amount)
        assert self.state == before
        held = before.reservation(rid)
        assert held is not None
        assert decision == Reserved(rid, held)

    @rule(target=closed_rids, rid=consumes(open_rids), fraction=st.fractions(0, 1))
    def settle_it(self, rid: str, fraction: Fraction) -> str:
        before = self.state
        held = before.reservation(rid)
        assert held is not None
        actual = held * D(fraction.numerator) / D(fraction.denominator)
        actual = min(actual.quantize(D("0.0001"), rounding=ROUND_FLOOR), held)
        result, self.state = settle(self.state, rid, actual)
        assert result == Settlement(rid, "settled", held, actual, D(0))
        self.spent += actual
        assert self.state.reserved == before.reserved - held
        assert status(self.state, rid) == "closed"
        return rid

    @rule(target=closed_rids, rid=consumes(open_rids))
    def release_it(self, rid: str) -> str:
        before = self.state
        held = before.reservation(rid)
        assert held is not None
        self.state = release(self.state, rid)
        assert self.state.reserved == before.reserved - held
        assert self.state.spent == before.spent
        assert status(self.state, rid) == "closed"
        return rid

    @rule(rid=closed_rids, actual=amounts)
    def settle_twice(self, rid: str, actual: Decimal) -> None:
        before = self.state
        result, self.state = settle(self.state, rid, actual)
        assert result.outcome == "closed"
        assert self.state == before

    @rule(rid=closed_rids)
    def release_twice(self, rid: str) -> None:
        before = self.state
        self.state = release(self.state, rid)
        assert self.state == before

    @rule(rid=closed_rids, amount=amounts)
    def reserve_closed(self, rid: str, amount: Decimal) -> None:
        before = self.state
        decision, self.state = reserve(self.state, rid, amount)
        assert decision == Refused(rid, "closed", before.available)
        assert self.state == before

    @invariant()
    def never_overcommitted(self) -> None:
        assert self.state.spent + self.state.reserved <= self.state.limit
        assert self.state.available == self.state.limit - self.state.spent - self.state.reserved

    @invariant()
    def spent_matches_model(self) -> None:
        assert self.state.spent == self.spent

    @invariant()
    def json_round_trip_is_identity(self) -> None:
        data = json.loads(json.dumps(self.state.to_dict()))
        assert BudgetState.from_dict(data) == self.state
        assert BudgetState.from_dict(data).to_dict() == data


TestBudgetMachine = BudgetMachine.TestCase
