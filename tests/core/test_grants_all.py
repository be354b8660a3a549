"""One grant over several budgets (key, project, tenant): all or nothing, and spent +
reserved never exceeds the limit of any budget that covers the request."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from core import grants
from core.billing import worst_case_cost
from core.budget import BudgetState
from core.catalog import Price

D = Decimal
KINDS: tuple[grants.BudgetKind, ...] = ("key", "project", "tenant")

money = st.decimals(min_value=D(0), max_value=D(5), places=6)
price = st.builds(
    Price,
    input=st.decimals(min_value=D("0.01"), max_value=D(100), places=2),
    output=st.decimals(min_value=D("0.01"), max_value=D(100), places=2),
)
states = st.builds(
    lambda limit, spent, held: BudgetState(
        limit=limit,
        spent=min(spent, limit),
        reservations=(("other:1", min(held, limit - min(spent, limit))),),
    ),
    money, money, money,
)
covers = st.lists(states, min_size=1, max_size=3).map(
    lambda ss: tuple(grants.Cover(KINDS[i], f"budget {i}", s) for i, s in enumerate(ss))
)


def ask(rid: str, p: Price, input_tokens: int, wanted: int) -> grants.Ask:
    return grants.Ask(rid, p, input_tokens, wanted, True, None)


@given(covers, price, st.integers(0, 100_000), st.integers(1, 50_000))
def test_a_grant_fits_every_budget_or_holds_nothing(
    cs: tuple[grants.Cover, ...], p: Price, input_tokens: int, wanted: int
) -> None:
    decision, after = grants.grant_all(ask("r:1", p, input_tokens, wanted), cs)
    least = min(c.state.available for c in cs)
    if isinstance(decision, grants.Refused):
        assert after == tuple(c.state for c in cs)  # nothing held anywhere
        assert worst_case_cost(input_tokens, 1, p) > least
        # the refusal names the budget that leaves the least, and says it in the message
        named = next(c for c in cs if c.kind == decision.budget)
        assert named.state.available == least
        assert named.label in decision.error.message
        return
    assert decision.reserved is not None and decision.max_output_tokens is not None
    assert decision.reserved == worst_case_cost(input_tokens, decision.max_output_tokens, p)
    assert decision.reserved <= least
    # the largest cap that fits the tightest budget
    cap = decision.max_output_tokens
    assert cap == wanted or worst_case_cost(input_tokens, cap + 1, p) > least
    for before, now in zip(cs, after, strict=True):
        assert now.reservation("r:1") == decision.reserved  # held in EVERY budget
        assert now.reserved == before.state.reserved + decision.reserved
        assert now.spent + now.reserved <= now.limit


@given(st.lists(states, min_size=1, max_size=3), price,
       st.lists(st.tuples(st.integers(0, 2_000), st.integers(1, 2_000), st.sampled_from(
           ["settle", "release", "hold"]), st.integers(0, 100)), max_size=30))
def test_many_attempts_never_overspend_any_budget(
    start: list[BudgetState], p: Price, steps: list[tuple[int, int, str, int]]
) -> None:
    """Attempts granted, then settled (at most their reservation), released or left open:
    spent + reserved stays within every limit, and each budget is charged the same."""
    current = tuple(start)
    charged = D(0)
    for n, (input_tokens, wanted, end, percent) in enumerate(steps):
        rid = f"r:{n}"
        cs = tuple(grants.Cover(KINDS[i], f"b{i}", s) for i, s in enumerate(current))
        decision, current = grants.grant_all(ask(rid, p, input_tokens, wanted), cs)
        if isinstance(decision, grants.Granted) and end != "hold":
            assert decision.reserved is not None
            if end == "settle":
                actual = (decision.reserved * percent / 100).quantize(D("1E-10"))
                current = grants.settle_all(current, rid, actual)
                current = grants.settle_all(current, rid, actual)  # a retry charges once
                charged += actual
            else:
                current = grants.release_all(current, rid)
        for before, now in zip(start, current, strict=True):
            assert now.spent + now.reserved <= now.limit
            assert now.spent == before.spent + charged


def test_the_tightest_budget_is_named_in_the_402() -> None:
    p = Price(D(1), D(1))
    roomy = BudgetState(limit=D(100))
    tight = BudgetState(limit=D("0.000001"))
    decision, _ = grants.grant_all(ask("r:1", p, 10, 10), (
        grants.Cover("key", grants.KEY_BUDGET_LABEL, roomy),
        grants.Cover("project", "The budget of project 'p1'", tight),
        grants.Cover("tenant", "The budget of tenant 't1'", roomy),
    ))
    assert isinstance(decision, grants.Refused)
    assert decision.budget == "project" and decision.error.status == 402
    assert decision.error.message.startswith("The budget of project 'p1' cannot pay")
    assert decision.error.param is None


def test_a_closed_rid_in_one_budget_refuses_in_all() -> None:
    """All or nothing even when one budget refuses the reservation itself."""
    p = Price(D(1), D(1))
    done = BudgetState(limit=D(10), closed=("r:1",))
    fresh = BudgetState(limit=D(10))
    decision, after = grants.grant_all(ask("r:1", p, 10, 10), (
        grants.Cover("key", "k", fresh), grants.Cover("tenant", "t", done)))
    assert isinstance(decision, grants.Refused) and decision.budget == "tenant"
    assert after == (fresh, done)
