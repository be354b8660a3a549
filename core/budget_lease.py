"""Budget leases: a process holds part of a shared budget row and spends from it locally.

Owns: the rules for a lease in a budget's shared state (`BudgetState.leases`, counted in
`reserved`), so that on storage shared by many processes (Postgres) grants and settles
are served from the process's slice and only a lease's renewal touches the shared row.
The adapter (`adapters/budget_slices.py`) applies these inside one atomic update.

Rules:
- A lease is `(lease id, amount, expires)`: `amount` is held for one process (its open
  local reservations plus what it may still grant), `expires` an epoch second.
- `sweep(state, now)` drops the leases that expired at or before `now` (their process is
  taken to be gone: what it held is free again). Every lease operation sweeps first.
- `give_back(state, lease_id, charged, now)` ends a lease: what the process charged
  from it moves to `spent` and the lease id is remembered in `closed`, so giving the
  same lease back twice (a retried transaction) charges once. A lease already swept
  still has its charge added (money spent is a fact).
- `fresh_units(rooms, unit, policy)`: how many `unit`s (the request's worst-case cost) a
  new lease takes, the least over the rows it is taken from (`core.lease.slice_units`
  on each row's room). Below 2 it is 0: as a budget runs low the process takes no slice
  and reserves per request in the shared row, exactly as without leases.
- `hold(state, lease_id, amount, expires)` records a lease of `amount` (none when 0).
  `room(state, keep) = available - keep`: what a new lease may take on top of `keep`
  (the open reservations a renewal carries into its new lease).
- `seen(state, lease_id, charged)`: the row as the process holding `lease_id` reports it
  (its spend views) before giving the lease back: `charged` already in `spent`, the
  lease holding the rest (never below 0), so spent + reserved is what the row says
  when the charge fits the lease. A lease the row no longer has changes nothing.
- So, with leases taken only from `room` and no process outliving its lease, every
  moment has spent + reserved (reservations and leases) <= limit, and the slices of all
  processes sum to no more than the budget had.
"""

from __future__ import annotations

from decimal import Decimal

from attrs import evolve

from core.budget import CLOSED_MEMORY, BudgetState
from core.lease import LeasePolicy, slice_units


def sweep(state: BudgetState, now: float) -> BudgetState:
    """`state` without the leases that expired at or before `now`."""
    live = tuple(lease for lease in state.leases if lease[2] > now)
    return state if len(live) == len(state.leases) else evolve(state, leases=live)


def lease(state: BudgetState, lease_id: str) -> Decimal | None:
    """What lease `lease_id` holds (None: no such lease)."""
    return next((amount for lid, amount, _ in state.leases if lid == lease_id), None)


def give_back(state: BudgetState, lease_id: str, charged: Decimal, now: float) -> BudgetState:
    """End lease `lease_id`, moving `charged` to spent (once per lease id)."""
    if charged < 0:
        raise ValueError(f"charged must be >= 0, not {charged}")
    state = sweep(state, now)
    if lease_id in state.closed:
        return state
    return evolve(
        state,
        spent=state.spent + charged,
        leases=tuple(lease for lease in state.leases if lease[0] != lease_id),
        closed=(*state.closed, lease_id)[-CLOSED_MEMORY:],
    )


def seen(state: BudgetState, lease_id: str, charged: Decimal) -> BudgetState:
    """`state` with what the holder of `lease_id` charged and has not given back yet."""
    if charged < 0:
        raise ValueError(f"charged must be >= 0, not {charged}")
    held = lease(state, lease_id)
    if held is None or not charged:
        return state
    return evolve(
        state,
        spent=state.spent + charged,
        leases=tuple(
            (lid, max(Decimal(0), amount - charged) if lid == lease_id else amount, expires)
            for lid, amount, expires in state.leases
        ),
    )


def room(state: BudgetState, keep: Decimal) -> Decimal:
    """What a lease carrying `keep` may take on top of it."""
    return state.available - keep


def fresh_units(rooms: tuple[Decimal, ...], unit: Decimal, policy: LeasePolicy) -> int:
    """How many `unit`s a new lease takes from every one of the rows (0: none)."""
    if not rooms or not unit > 0 or any(r < unit for r in rooms):
        return 0
    k = min(slice_units(r, unit, policy) for r in rooms)
    return k if k >= 2 else 0


def hold(state: BudgetState, lease_id: str, amount: Decimal, expires: float) -> BudgetState:
    """`state` with lease `lease_id` holding `amount` until `expires` (none when 0)."""
    if amount < 0:
        raise ValueError(f"a lease amount must be >= 0, not {amount}")
    if lease(state, lease_id) is not None or lease_id in state.closed:
        raise ValueError(f"lease {lease_id!r} exists already")
    if amount == 0:
        return state
    return evolve(state, leases=(*state.leases, (lease_id, amount, expires)))
