"""adapters/budget_slices.py's running total of a slice's open local reservations: it
equals their sum after any sequence of reserves and closes, and a local grant decided on
the slice's O(1) view (`_Slice.local_state`) is the one decided on every reservation."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from adapters.budget_slices import OpenReservations, _Slice
from core import budget, grants
from core.catalog import Price

RIDS = st.sampled_from([f"r{i}:0" for i in range(12)])
MONEY = st.decimals(min_value=Decimal(0), max_value=Decimal("50"), places=9)
OPS = st.lists(st.tuples(st.booleans(), RIDS, MONEY), max_size=60)


@given(OPS)
def test_the_running_total_is_the_sum_of_the_open_reservations(ops: list[tuple[bool, str, Decimal]]) -> None:
    held = OpenReservations()
    model: dict[str, Decimal] = {}
    for put, rid, amount in ops:
        if put:
            held.put(rid, amount)
            model[rid] = amount
        else:
            assert held.pop(rid) == model.pop(rid, None)
        assert held.total == sum(model.values(), Decimal(0))
        assert len(held) == len(model) and dict(held.items()) == model


PRICE = Price(input=Decimal("10"), output=Decimal("40"))


@given(OPS, RIDS, MONEY, st.integers(min_value=1, max_value=5000))
def test_a_grant_on_the_slices_view_is_the_grant_on_all_its_reservations(
    ops: list[tuple[bool, str, Decimal]], rid: str, charged: Decimal, wanted: int
) -> None:
    s = _Slice("key:k:total", "lease:p:1", Decimal(0), Decimal(1000), 0.0)
    for put, r, amount in ops:
        if put:
            s.open.put(r, amount)
        else:
            s.open.pop(r)
    s.charged = charged
    s.amount = Decimal(1000)
    full = budget.BudgetState(limit=s.amount, spent=s.charged, reservations=s.open.items())
    assert s.free == s.amount - s.charged - sum((a for _, a in s.open.items()), Decimal(0))
    ask = grants.Ask(rid=rid, price=PRICE, input_tokens=100, wanted=wanted, capped=True,
                     request_remaining=None)
    on_view, _ = grants.grant_all(ask, [grants.Cover("key", "k", s.local_state(rid))])
    on_all, _ = grants.grant_all(ask, [grants.Cover("key", "k", full)])
    assert _said(on_view) == _said(on_all)


def _said(decision: grants.Decision) -> object:
    """A decision as data (errors compare by identity, so by type and message here)."""
    if isinstance(decision, grants.Refused):
        return (type(decision.error), str(decision.error), decision.error.param, decision.budget)
    return decision
