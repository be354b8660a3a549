"""core.budget_lease: processes holding slices of one budget row never let spent plus
what is held (reservations and leases) exceed the limit, whatever the interleaving of
lease, grant, settle, give-back and expiry; a lease is charged once; a dead process's
lease is freed when it expires."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

import pytest
from attrs import define, evolve, field
from hypothesis import given
from hypothesis import strategies as st

from core import budget, budget_lease
from core.lease import LeasePolicy

LIMIT = Decimal("1")


def test_a_lease_round_trips_and_counts_as_reserved() -> None:
    state = budget_lease.hold(budget.BudgetState(limit=LIMIT), "lease:a:1", Decimal("0.25"), 100.0)
    assert state.reserved == state.leased == Decimal("0.25")
    assert state.available == Decimal("0.75")
    again = budget.BudgetState.from_dict(state.to_dict())
    assert again == state
    assert "leases" not in budget.BudgetState(limit=LIMIT).to_dict()  # rows without leases as before
    with pytest.raises(ValueError):
        budget.BudgetState.from_dict({**state.to_dict(), "leases": [["x", "1"]]})


def test_giving_a_lease_back_twice_charges_once() -> None:
    state = budget_lease.hold(budget.BudgetState(limit=LIMIT), "l1", Decimal("0.5"), 100.0)
    once = budget_lease.give_back(state, "l1", Decimal("0.2"), 50.0)
    assert (once.spent, once.reserved) == (Decimal("0.2"), Decimal(0))
    assert budget_lease.give_back(once, "l1", Decimal("0.2"), 50.0) == once
    with pytest.raises(ValueError):
        budget_lease.hold(once, "l1", Decimal("0.1"), 100.0)  # an id is never reused


def test_an_expired_lease_is_swept_and_a_late_give_back_still_charges() -> None:
    state = budget_lease.hold(budget.BudgetState(limit=LIMIT), "l1", Decimal("0.5"), 100.0)
    assert budget_lease.sweep(state, 99.0) == state
    swept = budget_lease.sweep(state, 100.0)
    assert swept.available == LIMIT
    late = budget_lease.give_back(state, "l1", Decimal("0.1"), 200.0)
    assert (late.spent, late.leases) == (Decimal("0.1"), ())


def test_fresh_units_is_zero_near_the_end_so_grants_go_per_request() -> None:
    policy = LeasePolicy()
    unit = Decimal("0.01")
    assert budget_lease.fresh_units((Decimal("10"),), unit, policy) == 125
    assert budget_lease.fresh_units((Decimal("10"), Decimal("0.2")), unit, policy) == 0
    assert budget_lease.fresh_units((Decimal("0.31"),), unit, policy) == 0  # below 32 units
    assert budget_lease.fresh_units((), unit, policy) == 0
    assert budget_lease.fresh_units((Decimal("10"),), Decimal(0), policy) == 0


policies = st.builds(LeasePolicy, divisor=st.integers(1, 16), exact_below=st.integers(1, 64),
                     max_units=st.integers(1, 200))
units = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("0.2"), places=4)
# (process, op, unit, fraction of a reservation actually spent)
steps = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(["grant", "settle", "renew", "expire"]), units,
              st.decimals(min_value=Decimal(0), max_value=Decimal(1), places=2)),
    max_size=120,
)


@define
class Proc:
    """One process of the model: its lease in the row and what it did with it."""

    lease: str | None = None
    amount: Decimal = Decimal(0)  # what its lease holds
    charged: Decimal = Decimal(0)  # settled from the slice, not yet given back
    open: dict[str, Decimal] = field(factory=dict)  # reserved from the slice
    in_row: list[str] = field(factory=list)  # its per-request reservations in the row

    @property
    def free(self) -> Decimal:
        return self.amount - self.charged - sum(self.open.values(), Decimal(0))


def _spend(held: Decimal, fraction: Decimal) -> Decimal:
    return (held * fraction).quantize(Decimal("0.0001"), rounding=ROUND_DOWN)


@given(policy=policies, steps=steps)
def test_spent_and_held_never_exceed_the_limit_under_any_interleaving(
    policy: LeasePolicy, steps: list[tuple[int, str, Decimal, Decimal]]
) -> None:
    """A model of three processes on one row: each holds at most one lease, renews it
    (give-back and a new lease carrying its open reservations, as the adapter does),
    grants from it when it fits or else per request in the row, settles no more than it
    reserved, or dies (its lease expires and is swept)."""
    row = budget.BudgetState(limit=LIMIT)
    procs: dict[int, Proc] = {}
    dead: set[int] = set()
    charged = Decimal(0)  # what was settled, from slices or in the row
    lost = Decimal(0)  # settled in slices of processes that died before giving back
    now, made = 0.0, 0
    for n, (p, op, unit, fraction) in enumerate(steps):
        if p in dead:
            continue
        now += 1.0
        me = procs.setdefault(p, Proc())
        if op == "expire":  # the process dies: its lease lapses and is swept
            lost += me.charged
            dead.add(p)
            lapsed = tuple((i, a, now if i == me.lease else e) for i, a, e in row.leases)
            row = budget_lease.sweep(evolve(row, leases=lapsed), now)
        elif op == "renew" or (op == "grant" and me.free < unit):
            if me.lease is not None:
                row = budget_lease.give_back(row, me.lease, me.charged, now)
            keep = sum(me.open.values(), Decimal(0))
            room = budget_lease.room(row, keep)
            fresh = unit * budget_lease.fresh_units((room,), unit, policy) if op == "grant" else Decimal(0)
            assert fresh <= max(room, Decimal(0))  # a slice never takes more than the row has
            made += 1
            me.lease = f"l{made}"
            row = budget_lease.hold(row, me.lease, keep + fresh, now + 1000.0)
            me.amount, me.charged = keep + fresh, Decimal(0)
            if op == "grant" and fresh == 0:  # per request, in the row
                decision, row = budget.reserve(row, f"r{n}", unit)
                if isinstance(decision, budget.Reserved):
                    me.in_row.append(f"r{n}")
            elif op == "grant":
                assert me.free >= unit
                me.open[f"r{n}"] = unit
        elif op == "grant":  # fits the slice
            me.open[f"r{n}"] = unit
        elif me.in_row:  # settle one held in the row
            rid = me.in_row.pop()
            held = row.reservation(rid)
            assert held is not None
            _, row = budget.settle(row, rid, _spend(held, fraction))
            charged += _spend(held, fraction)
        elif me.open:  # settle one held in the slice
            _, held = me.open.popitem()
            me.charged += _spend(held, fraction)
            charged += _spend(held, fraction)
        # the invariants, at every moment
        assert row.spent + row.reserved <= row.limit, row
        assert all(q.charged + sum(q.open.values(), Decimal(0)) <= q.amount
                   for i, q in procs.items() if i not in dead)
    for i, me in procs.items():  # every live process gives back
        if i not in dead and me.lease is not None:
            row = budget_lease.give_back(row, me.lease, me.charged, now)
    assert row.spent == charged - lost  # charged once each, none made up
    assert row.spent <= row.limit


@given(
    amount=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("0.5"), places=4),
    charged=st.decimals(min_value=Decimal(0), max_value=Decimal("0.6"), places=4),
    spent=st.decimals(min_value=Decimal(0), max_value=Decimal("0.4"), places=4),
)
def test_a_holders_view_shows_its_charges_as_spent_and_never_more_held(
    amount: Decimal, charged: Decimal, spent: Decimal
) -> None:
    """What the holder of a lease reports (`seen`): its charges not yet given back are in
    spent; while they fit the lease, spent + reserved is what the row holds; the view is
    what giving the lease back would make spent; another lease id changes nothing."""
    row = budget_lease.hold(budget.BudgetState(limit=LIMIT, spent=spent), "l1", amount, 100.0)
    view = budget_lease.seen(row, "l1", charged)
    assert view.spent == row.spent + charged == budget_lease.give_back(row, "l1", charged, 50.0).spent
    assert view.leased == max(Decimal(0), amount - charged)
    if charged <= amount:
        assert view.spent + view.reserved == row.spent + row.reserved
    assert budget_lease.seen(row, "l2", charged) == row
    with pytest.raises(ValueError):
        budget_lease.seen(row, "l1", Decimal("-0.1"))
