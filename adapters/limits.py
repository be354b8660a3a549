"""Per-key rate limits and budgets, held in storage so they hold across processes.

Owns: applying the core's bucket and reservation rules to shared state. Each limit is
one storage row updated atomically (`Storage.update_state`): the database provides the
atomicity, `core.ratelimit` and `core.budget` provide the rules. Time for shared state is
epoch seconds (`Clock.epoch()`), the one clock every gateway process agrees on.

Scopes: `rl:<key id>` (the key's requests- and tokens-per-minute buckets, together, so
admission is one atomic update); budgets (the key's, its project's, its tenant's) are
named by `adapters/budgets.py`. An attempt's grant reserves in every budget that covers
it in ONE `Storage.update_states` (one transaction over their rows on Postgres), and its
settle or release closes the reservation in all of them the same way, so spent +
reserved stays within each limit across processes.

On storage shared by many processes (`Storage.shared`: Postgres) rate admissions are
served from slices of the shared buckets that this process leases (`adapters/leases.py`,
sized by `core.lease`), so a busy key costs a transaction per slice, not per request;
the shared row stays the arbiter, so admitted <= limit holds exactly. Budgets are served
the same way from slices of the shared budget rows (`adapters/budget_slices.py`): a
grant and its settle cost no transaction while the slice fits, and as a budget runs low
grants reserve per request in the rows again. On SQLite the state is already in this
process's memory, so every admission, grant and settle is direct.

A settle or release that fails on the storage's own error (the database unreachable)
is raised to the run as before, and also kept (`unsettled`, by reservation id): a
reconciler (a Trio system task, started by the first such failure) tries them again
every `RECONCILE_SECONDS`, doubling up to `RECONCILE_MAX_SECONDS`, until each is
closed, so a reservation held by an outage is settled (with the real cost) or
released when the database is back. Trying again is harmless: `core.budget` closes a
reservation once per rid. Known gap: the pending list lives in the process, so a
process that dies during the outage leaves its reservations held in the row (they never
expire). What it held in budget slices is freed when their lease expires (30 s).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import trio
from attrs import frozen

from adapters.budget_slices import BudgetSlices, stored_state
from adapters.budgets import BudgetBook, Covering
from adapters.clock import Clock
from adapters.leases import RateSlices
from adapters.storage.base import Storage
from adapters.storage.records import KeyRecord
from core import budget, budget_lease, grants, ratelimit
from core.errors import RateLimited

log = logging.getLogger("umg.budgets")
RECONCILE_SECONDS = 1.0
RECONCILE_MAX_SECONDS = 30.0


@frozen
class Grant:
    """What one attempt may spend: `max_output_tokens` (None: uncapped) and the reservation."""

    max_output_tokens: int | None
    reserved: Decimal | None  # held in each budget of `scopes`; None: no budget covers it
    scopes: tuple[str, ...] = ()


def _rate_scope(key: KeyRecord) -> str:
    return f"rl:{key.id}"


class Limits:
    """`default_rpm` / `default_tpm` apply to keys that have no rpm / tpm of their own;
    `budget_slices` False: budgets on shared storage without slices (a transaction per
    grant and per settle, so a budgeted request fails closed when the database is away)."""

    def __init__(
        self,
        storage: Storage,
        clock: Clock,
        *,
        default_rpm: int | None = None,
        default_tpm: int | None = None,
        budget_slices: bool = True,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._default_rpm = default_rpm
        self._default_tpm = default_tpm
        self._slices = RateSlices(storage, clock) if storage.shared else None
        self.budget_slices = BudgetSlices(storage, clock) if storage.shared and budget_slices else None
        self.budgets = BudgetBook(storage, clock)
        # rate scope -> (the state this process last stored, the buckets it encodes): the
        # next take or adjust is given that very dict back (states are never mutated,
        # adapters/storage/memstate.py), so it is not parsed again; any other dict (read
        # from the database, or another process's on Postgres) is parsed
        self._parsed: dict[str, tuple[dict[str, Any], dict[str, ratelimit.Bucket]]] = {}
        self._tpm_specs: dict[int, ratelimit.BucketSpec] = {}  # tokens per minute -> its bucket
        # reservation id -> (grant, actual cost; None: release) whose close failed
        self.unsettled: dict[str, tuple[Grant, Decimal | None]] = {}
        self._reconciling = False

    @property
    def rate_leases(self) -> int:
        """Transactions made for rate slices so far (0 without shared storage)."""
        return 0 if self._slices is None else self._slices.leases

    def rate_held(self, key: KeyRecord, kind: str) -> float:
        """What this process holds of the key's `kind` bucket in a slice (0 if none)."""
        return 0.0 if self._slices is None else self._slices.held(_rate_scope(key), kind)

    def rpm(self, key: KeyRecord) -> int | None:
        """The key's requests per minute: its own, else the configured default."""
        return key.rpm if key.rpm is not None else self._default_rpm

    def tpm(self, key: KeyRecord) -> int | None:
        """The key's tokens per minute: its own, else the configured default."""
        return key.tpm if key.tpm is not None else self._default_tpm

    def _needs(self, key: KeyRecord, tokens: int) -> tuple[ratelimit.Need, ...]:
        needs: list[ratelimit.Need] = []
        if (rpm := self.rpm(key)) is not None:
            needs.append(ratelimit.Need("requests", rpm, 1.0))
        if (tpm := self.tpm(key)) is not None:
            needs.append(ratelimit.Need("tokens", tpm, float(tokens)))
        return tuple(needs)

    async def take_rate(self, key: KeyRecord, tokens: int) -> dict[str, str]:
        """Count one request and `tokens` estimated tokens; raise RateLimited when over.

        All or nothing, in one atomic update of the key's buckets (`ratelimit.take_all`).
        """
        needs = self._needs(key, tokens)
        if not needs:
            return {}
        now = self._clock.epoch()

        scope = _rate_scope(key)

        def apply(state: dict[str, Any] | None) -> tuple[ratelimit.Admission, dict[str, Any]]:
            admission, buckets = ratelimit.take_all(needs, self._buckets(scope, state), now)
            return admission, self._stored(scope, buckets)

        if self._slices is not None:
            admission = await self._slices.take(scope, needs, now)
        else:
            admission = await self._storage.update_state(scope, apply)
        if isinstance(admission, ratelimit.TooLarge):
            raise RateLimited(
                f"Request too large for {admission.kind} per minute: limit {admission.per_minute}, "
                f"this request needs about {int(admission.amount)}"
            )
        if isinstance(admission, ratelimit.Refusal):
            retry = ratelimit.retry_after_header(admission.retry_after)
            err = RateLimited(
                f"Rate limit reached for {admission.kind} per minute ({admission.per_minute}); "
                f"retry after {retry} s",
                retry_after=admission.retry_after,
            )
            err.headers = {**admission.headers, "retry-after": retry}
            raise err
        return dict(admission.headers)

    async def adjust_tokens(self, key: KeyRecord, delta: int) -> None:
        """Charge (or refund) the difference between estimated and real tokens."""
        tpm = self.tpm(key)
        if tpm is None or delta == 0:
            return
        if self._slices is not None and self._slices.adjust(_rate_scope(key), "tokens", float(delta)):
            return  # charged to the slice held here; given back with it
        spec = self._tpm_specs.get(tpm)
        if spec is None:  # made once per limit (a BucketSpec is immutable; ~11 k instructions)
            if len(self._tpm_specs) >= 1_000:
                self._tpm_specs.clear()  # bounded: the lot dropped, each made again on use
            spec = self._tpm_specs[tpm] = ratelimit.BucketSpec.per_minute(tpm)
        now = self._clock.epoch()

        scope = _rate_scope(key)

        def apply(state: dict[str, Any] | None) -> tuple[None, dict[str, Any]]:
            buckets = dict(self._buckets(scope, state))  # a copy: the parsed one is kept
            buckets["tokens"] = ratelimit.adjust(spec, buckets.get("tokens"), float(delta), now)
            return None, self._stored(scope, buckets)

        await self._storage.update_state(scope, apply)

    def _buckets(self, scope: str, state: dict[str, Any] | None) -> Mapping[str, ratelimit.Bucket]:
        """`state`'s buckets (not to be changed): parsed, unless it is the one stored last."""
        known = self._parsed.get(scope)
        if known is not None and known[0] is state:
            return known[1]
        return ratelimit.buckets_from_dict(state)

    def _stored(self, scope: str, buckets: dict[str, ratelimit.Bucket]) -> dict[str, Any]:
        """`buckets` as the state to store, remembered with them (see `_parsed`)."""
        state = ratelimit.buckets_to_dict(buckets)
        if len(self._parsed) >= 10_000 and scope not in self._parsed:
            self._parsed.clear()  # bounded: the lot dropped, each parsed again on its next use
        self._parsed[scope] = (state, buckets)
        return state

    def _scope(self, key: KeyRecord) -> str | None:
        if key.budget_usd is None:
            return None
        return budget.period_key(f"key:{key.id}", key.budget_period, self._clock.wall())  # type: ignore[arg-type]

    async def grant(self, key: KeyRecord, ask: grants.Ask) -> Grant:
        """Size one attempt by `core.grants`, reserving in EVERY budget that covers the key
        (its own, its project's, its tenant's) in one atomic update; raise the refusal's
        `BudgetExceeded` (which names the budget that refused)."""
        covers = await self.budgets.covering(key)
        if not covers:
            decision, _ = grants.grant(ask, None)
        elif self.budget_slices is not None:
            decision = await self.budget_slices.grant(covers, ask)
        else:
            scopes = tuple(c.scope for c in covers)

            def apply(
                states: dict[str, dict[str, Any] | None],
            ) -> tuple[grants.Decision, dict[str, dict[str, Any]]]:
                now = tuple(
                    grants.Cover(c.kind, c.label, stored_state(states[c.scope], c.limit)) for c in covers
                )
                decision, after = grants.grant_all(ask, now)
                return decision, {s: a.to_dict() for s, a in zip(scopes, after, strict=True)}

            decision = await self._storage.update_states(scopes, apply)
        if isinstance(decision, grants.Refused):
            raise decision.error
        held = tuple(c.scope for c in covers) if decision.reserved is not None else ()
        return Grant(decision.max_output_tokens, decision.reserved, held)

    async def _close(self, grant: Grant, close: Callable[[list[budget.BudgetState]],
                                                           tuple[budget.BudgetState, ...]]) -> None:
        if not grant.scopes:
            return

        def apply(states: dict[str, dict[str, Any] | None]) -> tuple[None, dict[str, dict[str, Any]]]:
            known = [s for s in grant.scopes if states[s]]
            after = close([budget.BudgetState.from_dict(states[s] or {}) for s in known])
            new = {s: (states[s] or {}) for s in grant.scopes}
            new.update({s: a.to_dict() for s, a in zip(known, after, strict=True)})
            return None, new

        await self._storage.update_states(grant.scopes, apply)

    async def settle(self, grant: Grant, rid: str, actual: Decimal) -> None:
        """Charge `actual` for `rid` in every budget the grant reserved in, atomically
        (kept and tried again when the database is back, if it is unreachable)."""
        await self._closing(grant, rid, actual)

    async def release(self, grant: Grant, rid: str) -> None:
        """Drop `rid`'s reservation from every budget the grant reserved in, atomically
        (kept and tried again when the database is back, if it is unreachable)."""
        await self._closing(grant, rid, None)

    async def _close_rid(self, grant: Grant, rid: str, actual: Decimal | None) -> None:
        if actual is None:
            await self._close(grant, lambda states: grants.release_all(states, rid))
        else:
            await self._close(grant, lambda states: grants.settle_all(states, rid, actual))

    async def _closing(self, grant: Grant, rid: str, actual: Decimal | None) -> None:
        if self.budget_slices is not None and grant.scopes:
            rest = await self.budget_slices.close_locally(grant.scopes, rid, actual)
            if not rest:
                return
            grant = Grant(grant.max_output_tokens, grant.reserved, rest)
        try:
            await self._close_rid(grant, rid, actual)
        except self._storage.errors:
            if grant.scopes:
                self.unsettled[rid] = (grant, actual)
                if not self._reconciling:
                    self._reconciling = True
                    trio.lowlevel.spawn_system_task(self._reconcile, name="umg-budget-reconciler")
            raise

    async def reconcile(self) -> int:
        """Close what is unsettled, oldest first, until the storage fails again; how many
        are left."""
        for rid, (grant, actual) in list(self.unsettled.items()):
            with trio.CancelScope(shield=True):
                await self._close_rid(grant, rid, actual)
            self.unsettled.pop(rid, None)
            log.info("budget reservation %s %s now that the database is back", rid,
                     "released" if actual is None else f"settled at {actual}")
        return len(self.unsettled)

    async def _reconcile(self) -> None:
        wait = RECONCILE_SECONDS
        try:
            while self.unsettled:
                await trio.sleep(wait)
                try:
                    await self.reconcile()
                except self._storage.errors:
                    wait = min(RECONCILE_MAX_SECONDS, wait * 2)
                else:
                    wait = RECONCILE_SECONDS
        finally:
            self._reconciling = False

    async def aclose(self) -> None:
        """Give back what this process holds of shared budgets (at shutdown)."""
        if self.budget_slices is not None:
            await self.budget_slices.aclose()

    async def key_budget(self, key: KeyRecord) -> budget.BudgetState | None:
        return (await self.key_budgets([key]))[key.id]

    async def key_budgets(self, keys: list[KeyRecord]) -> dict[str, budget.BudgetState | None]:
        """Each key's budget state this period (None without a budget), by key id, read in
        one storage query however many keys there are."""
        scopes = {key.id: self._scope(key) for key in keys}
        wanted = [s for s in scopes.values() if s is not None]
        states = await self._storage.read_states(wanted) if wanted else {}
        out: dict[str, budget.BudgetState | None] = {}
        for key in keys:
            scope = scopes[key.id]
            if scope is None or key.budget_usd is None:
                out[key.id] = None
                continue
            state = states.get(scope)
            out[key.id] = self._seen(scope, (
                budget_lease.sweep(budget.BudgetState.from_dict(state), self._clock.epoch())
                if state else budget.BudgetState(limit=key.budget_usd)
            ))
        return out

    async def covering_now(self, key: KeyRecord) -> list[tuple[Covering, budget.BudgetState]]:
        """Every budget that covers `key`, with its current period's state (for reports)."""
        covers = await self.budgets.covering(key)
        states = await self._storage.read_states([c.scope for c in covers]) if covers else {}
        epoch = self._clock.epoch()
        return [(c, self._seen(c.scope, budget_lease.sweep(stored_state(states[c.scope], c.limit), epoch)))
                for c in covers]

    def _seen(self, scope: str, state: budget.BudgetState) -> budget.BudgetState:
        """A budget's state as this process reports it: with what it charged in its own
        slice and has not given back yet (so its own requests' spend shows at once; other
        processes' within their give-back bound)."""
        return state if self.budget_slices is None else self.budget_slices.seen(scope, state)
