"""Slices of shared budget rows held by this process (for storage shared by many
processes: Postgres), so most grants and settles need no database round trip.

Owns: when a grant is reserved from this process's slice of a budget and when it goes to
the shared row, charging settles locally, and moving what was charged to the row's
`spent` in bounded time. The lease rules are `core.budget_lease`'s, the size
`core.lease.slice_units` with the request's worst-case cost as the unit.

Rules:
- A slice is a lease in the shared row (counted there as reserved), taken for every
  budget that covers the request (key, project, tenant) in ONE `update_states`. The
  grant that leased it is reserved from it; later grants whose worst case fits what is
  left of every covering budget's slice are reserved locally (`core.grants.grant_all`
  on the slices, so the cap and reservation are the ones the row would give).
- Exact: a lease only takes what the row has (`core.budget_lease.room`), so spent +
  reserved (reservations and leases) <= limit holds across processes at every moment.
  As a budget runs low the lease is 0 and the grant reserves per request in the row,
  exactly as without slices (so small budgets, and 402s naming the budget, are as before).
- Renewed: a slice grants for at most `hold_seconds` (1 s) and never after its budget's
  limit changed. The next grant after that, or one the slice cannot fit, renews it in
  the same transaction as its new lease: what was charged moves to `spent`, the open
  local reservations are carried into the new lease. Every `hold_seconds` a task also
  renews the slices whose time is over without taking more (a slice with nothing open is
  given back whole), so the row's `spent` (`GET /v1/usage`) lags this process's settles
  by at most 2 x `hold_seconds`. A settle that meets a renewal waits for it (shielded).
- A lease expires in the row `lease_seconds` (30 s) after its last renewal: a process
  that dies holds nothing after that (`core.budget_lease.sweep`, run by every lease
  operation of any process). What it had charged and not given back is then missing
  from `spent` (its ledger rows have it); its open reservations are freed.
- Closing (`aclose`, at shutdown) gives every slice back; open reservations move to the
  row as ordinary reservations, settled there afterwards.
- The local reservations of a slice keep a running total (`OpenReservations`), updated
  on every reserve and close, so a local grant costs the same with 1 or 10,000 open.
- Known gap: a live process that cannot reach the database for longer than
  `lease_seconds` may see its lease swept by another; its charges are still added to
  `spent` when it gives back (an overrun, as a settle above its reservation is).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, TypeVar

import trio
from attrs import define, evolve, field

from adapters.budgets import Covering
from adapters.clock import Clock
from adapters.leases import HOLD_SECONDS
from adapters.storage.base import StatesFn, Storage
from core import budget, budget_lease, grants
from core.billing import worst_case_cost
from core.lease import LeasePolicy

log = logging.getLogger("umg.budgets")
LEASE_SECONDS = 30.0
T = TypeVar("T")


def stored_state(stored: dict[str, Any] | None, limit: Decimal) -> budget.BudgetState:
    """A budget's stored state under its configured limit (fresh when never written)."""
    if not stored:
        return budget.BudgetState(limit=limit)
    return budget.with_limit(budget.BudgetState.from_dict(stored), limit)


class OpenReservations:
    """A slice's open local reservations (rid -> amount) and their running total."""

    __slots__ = ("_amounts", "total")

    def __init__(self) -> None:
        self._amounts: dict[str, Decimal] = {}
        self.total = Decimal(0)  # always sum(self._amounts.values()), exactly

    def __len__(self) -> int:
        return len(self._amounts)

    def __contains__(self, rid: str) -> bool:
        return rid in self._amounts

    def get(self, rid: str) -> Decimal | None:
        return self._amounts.get(rid)

    def items(self) -> tuple[tuple[str, Decimal], ...]:
        return tuple(self._amounts.items())

    def put(self, rid: str, amount: Decimal) -> None:
        """Hold `amount` under `rid` (replacing what `rid` held)."""
        self.total += amount - self._amounts.get(rid, Decimal(0))
        self._amounts[rid] = amount

    def pop(self, rid: str) -> Decimal | None:
        """Close `rid`: what it held (None: not held here)."""
        amount = self._amounts.pop(rid, None)
        if amount is not None:
            self.total -= amount
        return amount


@define
class _Slice:
    scope: str
    lease_id: str  # the row's lease for this slice
    amount: Decimal  # what the row's lease holds
    limit: Decimal  # the budget's limit when leased: a changed limit renews
    expires: float  # Clock.now(): no local grant from then on
    open: OpenReservations = field(factory=OpenReservations)  # reserved locally
    charged: Decimal = Decimal(0)  # settled here, not yet in the row's spent
    busy: trio.Event | None = None  # set when the renewal in flight ends

    def local_state(self, rid: str) -> budget.BudgetState:
        """The slice as a budget for a grant under `rid`: the other open reservations
        count as spent (the same `available`), so building it does not walk them."""
        mine = self.open.get(rid)
        others = self.open.total - (mine or Decimal(0))
        return budget.BudgetState(
            limit=self.amount,
            spent=self.charged + others,
            reservations=() if mine is None else ((rid, mine),),
        )

    @property
    def free(self) -> Decimal:
        return self.amount - self.charged - self.open.total


class BudgetSlices:
    def __init__(
        self,
        storage: Storage,
        clock: Clock,
        policy: LeasePolicy | None = None,
        hold_seconds: float = HOLD_SECONDS,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._policy = policy or LeasePolicy()
        self.hold_seconds = hold_seconds  # how long a slice grants (read at each use)
        self._lease_seconds = lease_seconds
        self._process = secrets.token_hex(6)
        self._made = 0
        self._slices: dict[str, _Slice] = {}
        self._locks: dict[str, trio.Lock] = {}
        self._flushing = False
        self._closed = False  # given back for good (shutdown): no more slices
        self.leases = 0  # transactions made on budget rows (for tests and benchmarks)

    def held(self, scope: str) -> tuple[Decimal, Decimal] | None:
        """(lease amount, charged here) of the slice for `scope`; None without one."""
        s = self._slices.get(scope)
        return None if s is None else (s.amount, s.charged)

    def seen(self, scope: str, state: budget.BudgetState) -> budget.BudgetState:
        """`scope`'s stored `state` with what this process charged in its slice and has
        not given back yet (`core.budget_lease.seen`): its own spend shows at once."""
        s = self._slices.get(scope)
        return state if s is None else budget_lease.seen(state, s.lease_id, s.charged)

    # -- grants -------------------------------------------------------------------------

    async def grant(
        self, covers: Sequence[Covering], ask: grants.Ask
    ) -> grants.Decision:
        """One attempt's grant over `covers`: from the slices when they fit it, else
        through the shared rows (a renewal, or a per-request reservation there)."""
        unit = worst_case_cost(ask.input_tokens, ask.wanted, ask.price)
        decided = self._local(covers, ask, unit)
        if decided is not None:
            return decided
        async with self._locked(tuple(c.scope for c in covers)):
            for exact in (False, False, True):  # a slice overrun meanwhile: try again, then exact
                decided = self._local(covers, ask, unit)
                if decided is not None:
                    return decided
                with trio.CancelScope(shield=True):
                    decided = await self._renew(covers, ask, unit, exact)
                if decided is not None:
                    return decided
        raise AssertionError("an exact renewal always decides")  # pragma: no cover

    def _local(
        self, covers: Sequence[Covering], ask: grants.Ask, unit: Decimal
    ) -> grants.Decision | None:
        if not unit > 0:
            return None
        now = self._clock.now()
        held: list[_Slice] = []
        for cover in covers:
            s = self._slices.get(cover.scope)
            if s is None or s.busy is not None or now >= s.expires or s.limit != cover.limit:
                return None
            if s.free < unit:
                return None
            held.append(s)
        decision, _ = grants.grant_all(
            ask, [grants.Cover(c.kind, c.label, s.local_state(ask.rid)) for c, s in zip(covers, held, strict=True)]
        )
        if isinstance(decision, grants.Refused) and decision.budget is not None:
            return None  # not the slices' to refuse: the rows name the budget
        if isinstance(decision, grants.Granted) and decision.reserved is not None:
            for s in held:
                s.open.put(ask.rid, decision.reserved)
        return decision

    def _new_id(self) -> str:
        self._made += 1
        return f"lease:{self._process}:{self._made}"

    async def _renew(
        self, covers: Sequence[Covering], ask: grants.Ask, unit: Decimal, exact: bool
    ) -> grants.Decision | None:
        """Renew the slices of `covers` (a new lease when the rows have room), or reserve
        per request in the rows; None: a slice was leased, grant from it."""
        olds = {c.scope: s for c in covers if (s := self._slices.get(c.scope)) is not None}
        lease_id, epoch, policy = self._new_id(), self._clock.epoch(), self._policy
        expires = epoch + self._lease_seconds

        def apply(
            states: dict[str, dict[str, Any] | None],
        ) -> tuple[tuple[grants.Decision | None, Decimal], dict[str, dict[str, Any]]]:
            rows: list[budget.BudgetState] = []
            keeps: list[Decimal] = []
            for cover in covers:
                state = budget_lease.sweep(stored_state(states[cover.scope], cover.limit), epoch)
                old = olds.get(cover.scope)
                keep = Decimal(0)
                if old is not None:
                    state = budget_lease.give_back(state, old.lease_id, old.charged, epoch)
                    keep = old.open.total
                rows.append(state)
                keeps.append(keep)
            rooms = tuple(budget_lease.room(s, k) for s, k in zip(rows, keeps, strict=True))
            fresh = Decimal(0) if exact or self._closed else unit * budget_lease.fresh_units(rooms, unit, policy)
            rows = [budget_lease.hold(s, lease_id, k + fresh, expires) for s, k in zip(rows, keeps, strict=True)]
            decision: grants.Decision | None = None
            if fresh == 0:  # no slice: one reservation in the rows, as without slices
                decision, after = grants.grant_all(
                    ask, [grants.Cover(c.kind, c.label, s) for c, s in zip(covers, rows, strict=True)]
                )
                rows = list(after)
            return (decision, fresh), {c.scope: s.to_dict() for c, s in zip(covers, rows, strict=True)}

        decision, fresh = await self._update(tuple(olds.values()), tuple(c.scope for c in covers), apply)
        now = self._clock.now()
        for cover in covers:
            s = olds.get(cover.scope)
            if s is not None:
                s.lease_id, s.charged, s.limit = lease_id, Decimal(0), cover.limit
                s.amount = s.open.total + fresh
                s.expires = now + self.hold_seconds
                if not s.open and fresh == 0:
                    del self._slices[cover.scope]
            elif fresh > 0:
                self._slices[cover.scope] = _Slice(cover.scope, lease_id, fresh, cover.limit, now + self.hold_seconds)
        if self._slices and not self._flushing and not self._closed:
            self._flushing = True
            trio.lowlevel.spawn_system_task(self._flush_loop, name="umg-budget-slices")
        return decision

    async def _update(self, busy: tuple[_Slice, ...], scopes: tuple[str, ...], apply: StatesFn[T]) -> T:
        """`update_states` while `busy` are marked renewing (settles on them wait)."""
        marks = []
        for s in busy:
            s.busy = trio.Event()
            marks.append(s.busy)
        try:
            self.leases += 1
            return await self._storage.update_states(scopes, apply)
        finally:
            for s, mark in zip(busy, marks, strict=True):
                s.busy = None
                mark.set()

    @asynccontextmanager
    async def _locked(self, scopes: tuple[str, ...]) -> AsyncIterator[None]:
        """This process's renewals of `scopes`, one at a time (sorted: no deadlock)."""
        taken: list[trio.Lock] = []
        try:
            for scope in sorted(set(scopes)):
                lock = self._locks.setdefault(scope, trio.Lock())
                await lock.acquire()
                taken.append(lock)
            yield
        finally:
            for lock in reversed(taken):
                lock.release()

    # -- settles ------------------------------------------------------------------------

    async def close_locally(
        self, scopes: tuple[str, ...], rid: str, actual: Decimal | None
    ) -> tuple[str, ...]:
        """Settle (`actual`) or release (None) `rid` in the slices that hold it; the
        scopes where it is not held here (its reservation is in the row)."""
        rest: list[str] = []
        for scope in scopes:
            with trio.CancelScope(shield=True):  # a renewal is one short transaction
                while (s := self._slices.get(scope)) is not None and s.busy is not None:
                    await s.busy.wait()
            if s is not None and s.open.pop(rid) is not None:
                if actual is not None:
                    s.charged += actual
            else:
                rest.append(scope)
        return tuple(rest)

    # -- giving back --------------------------------------------------------------------

    async def flush(self, *, everything: bool = False) -> int:
        """Renew, without taking more, the slices whose hold is over (`everything`: give
        back all, open reservations moving to the rows); how many were."""
        now = self._clock.now()
        due = sorted(s.scope for s in self._slices.values() if everything or now >= s.expires)
        if not due:
            return 0
        async with self._locked(tuple(due)):
            now = self._clock.now()
            slices = tuple(
                s for scope in due
                if (s := self._slices.get(scope)) is not None and (everything or now >= s.expires)
            )
            if slices:
                with trio.CancelScope(shield=True):
                    await self._give(slices, everything)
            return len(slices)

    async def _give(self, slices: tuple[_Slice, ...], final: bool) -> None:
        lease_id, epoch = self._new_id(), self._clock.epoch()
        expires = epoch + self._lease_seconds

        def apply(states: dict[str, dict[str, Any] | None]) -> tuple[None, dict[str, dict[str, Any]]]:
            out: dict[str, dict[str, Any]] = {}
            for s in slices:
                state = budget_lease.sweep(stored_state(states[s.scope], s.limit), epoch)
                state = budget_lease.give_back(state, s.lease_id, s.charged, epoch)
                if final:
                    have = {rid for rid, _ in state.reservations}
                    moved = tuple((rid, a) for rid, a in s.open.items() if rid not in have)
                    state = evolve(state, reservations=(*state.reservations, *moved))
                else:
                    state = budget_lease.hold(state, lease_id, s.open.total, expires)
                out[s.scope] = state.to_dict()
            return None, out

        await self._update(slices, tuple(s.scope for s in slices), apply)
        now = self._clock.now()
        for s in slices:
            s.lease_id, s.charged = lease_id, Decimal(0)
            s.amount = s.open.total
            s.expires = now + self.hold_seconds
            if final or not s.open:
                if self._slices.get(s.scope) is s:
                    del self._slices[s.scope]

    async def _flush_loop(self) -> None:
        try:
            while self._slices and not self._closed:
                await trio.sleep(self.hold_seconds)
                try:
                    await self.flush()
                except self._storage.errors as err:
                    log.warning("budget slices not given back (tried again in %s s): %s: %s",
                                self.hold_seconds, type(err).__name__, err)
        finally:
            self._flushing = False

    async def aclose(self) -> None:
        """Give every slice back (at shutdown); grants after this take no slice."""
        self._closed = True
        await self.flush(everything=True)
