"""Budget grants: an attempt never reserves more than the budgets allow, and gets the
largest output cap that fits (the rule the driver applies on the real path)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from core import grants
from core.billing import worst_case_cost
from core.budget import BudgetState
from core.catalog import Price
from core.errors import BudgetExceeded

D = Decimal

money = st.decimals(min_value=D(0), max_value=D(50), places=6)
prices = st.builds(
    Price,
    input=st.decimals(min_value=D("0.01"), max_value=D(100), places=2),
    output=st.decimals(min_value=D("0.01"), max_value=D(100), places=2),
)
asks = st.builds(
    grants.Ask,
    rid=st.just("req_1:1"),
    price=prices,
    input_tokens=st.integers(0, 200_000),
    wanted=st.integers(1, 100_000),
    capped=st.booleans(),
    request_remaining=st.none() | money,
)
budgets = st.none() | st.builds(
    lambda limit, spent: BudgetState(limit=limit, spent=min(spent, limit)), money, money
)


def _money_left(ask: grants.Ask, state: BudgetState | None) -> Decimal | None:
    limits = [x for x in (ask.request_remaining, state.available if state else None) if x is not None]
    return min(limits) if limits else None


@given(asks, budgets)
def test_a_grant_never_exceeds_what_the_budgets_leave(ask: grants.Ask, state: BudgetState | None) -> None:
    decision, after = grants.grant(ask, state)
    left = _money_left(ask, state)
    if isinstance(decision, grants.Refused):
        assert isinstance(decision.error, BudgetExceeded)
        assert after == state  # a refusal holds nothing
        assert left is not None and worst_case_cost(ask.input_tokens, 1, ask.price) > left
        return
    cap = decision.max_output_tokens
    if left is None:
        assert cap == (ask.wanted if ask.capped else None) and decision.reserved is None
        return
    assert cap is not None and 1 <= cap <= ask.wanted
    assert worst_case_cost(ask.input_tokens, cap, ask.price) <= left
    # the largest that fits: one more token would not (unless the ask itself is the bound)
    assert cap == ask.wanted or worst_case_cost(ask.input_tokens, cap + 1, ask.price) > left


@given(asks, budgets)
def test_a_key_budget_reserves_the_worst_case_and_never_overcommits(
    ask: grants.Ask, state: BudgetState | None
) -> None:
    decision, after = grants.grant(ask, state)
    if state is None:
        assert after is None
        assert not isinstance(decision, grants.Granted) or decision.reserved is None
        return
    assert after is not None
    assert after.spent + after.reserved <= after.limit
    if isinstance(decision, grants.Granted):
        assert decision.max_output_tokens is not None and decision.reserved is not None
        assert decision.reserved == worst_case_cost(ask.input_tokens, decision.max_output_tokens, ask.price)
        assert after.reservation(ask.rid) == decision.reserved
        assert after.reserved == state.reserved + decision.reserved


def test_a_request_budget_refusal_names_max_cost_usd() -> None:
    ask = grants.Ask("r:1", Price(D(10), D(10)), 1_000_000, 10, True, D("0.01"))
    decision, _ = grants.grant(ask, None)
    assert isinstance(decision, grants.Refused)
    assert decision.error.param == grants.REQUEST_BUDGET_PARAM
    decision, _ = grants.grant(grants.Ask("r:1", Price(D(10), D(10)), 1_000_000, 10, True, None),
                               BudgetState(limit=D("0.01")))
    assert isinstance(decision, grants.Refused) and decision.error.param is None


@given(st.none() | st.integers(1, 10**6), st.integers(1, 10**6))
def test_wanted_output_is_the_ask_bounded_by_the_deployment(asked: int | None, most: int) -> None:
    wanted = grants.wanted_output(asked, most)
    assert wanted == (most if asked is None else min(asked, most))
