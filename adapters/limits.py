"""Per-key rate limits and budgets, held in storage so they hold across processes.

Owns: applying the core's bucket and reservation rules to shared state. Each limit is
one storage row updated atomically (`Storage.update_state`): the database provides the
atomicity, `core.ratelimit` and `core.budget` provide the rules. Time for shared state is
epoch seconds (`Clock.epoch()`), the one clock every gateway process agrees on.

Scopes: `rl:<key id>` (the key's requests- and tokens-per-minute buckets, together, so
admission is one atomic update), and `core.budget.period_key("key:<key id>", period, now)` for key budgets.

On storage shared by many processes (`Storage.shared`: Postgres) rate admissions are
served from slices of the shared buckets that this process leases (`adapters/leases.py`,
sized by `core.lease`), so a busy key costs a transaction per slice, not per request;
the shared row stays the arbiter, so admitted <= limit holds exactly. On SQLite the
state is already in this process's memory, so every admission is direct.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from attrs import frozen

from adapters.clock import Clock
from adapters.leases import RateSlices
from adapters.storage.base import Storage
from adapters.storage.records import KeyRecord
from core import budget, grants, ratelimit
from core.errors import RateLimited


@frozen
class Grant:
    """What one attempt may spend: `max_output_tokens` (None: uncapped) and the reservation."""

    max_output_tokens: int | None
    reserved: Decimal | None  # key-budget reservation, None when the key has no budget
    scope: str | None


def _rate_scope(key: KeyRecord) -> str:
    return f"rl:{key.id}"


class Limits:
    """`default_rpm` / `default_tpm` apply to keys that have no rpm / tpm of their own."""

    def __init__(
        self,
        storage: Storage,
        clock: Clock,
        *,
        default_rpm: int | None = None,
        default_tpm: int | None = None,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._default_rpm = default_rpm
        self._default_tpm = default_tpm
        self._slices = RateSlices(storage, clock) if storage.shared else None

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

        def apply(state: dict[str, Any] | None) -> tuple[ratelimit.Admission, dict[str, Any]]:
            admission, buckets = ratelimit.take_all(needs, ratelimit.buckets_from_dict(state), now)
            return admission, ratelimit.buckets_to_dict(buckets)

        if self._slices is not None:
            admission = await self._slices.take(_rate_scope(key), needs, now)
        else:
            admission = await self._storage.update_state(_rate_scope(key), apply)
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
        spec = ratelimit.BucketSpec.per_minute(tpm)
        now = self._clock.epoch()

        def apply(state: dict[str, Any] | None) -> tuple[None, dict[str, Any]]:
            buckets = ratelimit.buckets_from_dict(state)
            buckets["tokens"] = ratelimit.adjust(spec, buckets.get("tokens"), float(delta), now)
            return None, ratelimit.buckets_to_dict(buckets)

        await self._storage.update_state(_rate_scope(key), apply)

    def _scope(self, key: KeyRecord) -> str | None:
        if key.budget_usd is None:
            return None
        return budget.period_key(f"key:{key.id}", key.budget_period, self._clock.wall())  # type: ignore[arg-type]

    async def grant(self, key: KeyRecord, ask: grants.Ask) -> Grant:
        """Size one attempt by `core.grants` (reserving in the key's budget, atomically);
        raise the refusal's `BudgetExceeded`."""
        scope = self._scope(key)
        if scope is None:
            decision, _ = grants.grant(ask, None)
        else:
            limit = key.budget_usd
            assert limit is not None

            def apply(state: dict[str, Any] | None) -> tuple[grants.Decision, dict[str, Any]]:
                current = budget.BudgetState.from_dict(state) if state else budget.BudgetState(limit=limit)
                decision, after = grants.grant(ask, budget.with_limit(current, limit))
                assert after is not None
                return decision, after.to_dict()

            decision = await self._storage.update_state(scope, apply)
        if isinstance(decision, grants.Refused):
            raise decision.error
        return Grant(decision.max_output_tokens, decision.reserved, scope if decision.reserved is not None else None)

    async def settle(self, grant: Grant, rid: str, actual: Decimal) -> None:
        if grant.scope is None:
            return

        def apply(state: dict[str, Any] | None) -> tuple[None, dict[str, Any]]:
            if state is None:
                return None, {}
            _, new = budget.settle(budget.BudgetState.from_dict(state), rid, actual)
            return None, new.to_dict()

        await self._storage.update_state(grant.scope, apply)

    async def release(self, grant: Grant, rid: str) -> None:
        if grant.scope is None:
            return

        def apply(state: dict[str, Any] | None) -> tuple[None, dict[str, Any]]:
            if state is None:
                return None, {}
            return None, budget.release(budget.BudgetState.from_dict(state), rid).to_dict()

        await self._storage.update_state(grant.scope, apply)

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
            out[key.id] = (
                budget.BudgetState.from_dict(state) if state else budget.BudgetState(limit=key.budget_usd)
            )
        return out
