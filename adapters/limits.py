"""Per-key rate limits and budgets, held in storage so they hold across processes.

Owns: applying the core's bucket and reservation rules to shared state. Each limit is
one storage row updated atomically (`Storage.update_state`): the database provides the
atomicity, `core.ratelimit` and `core.budget` provide the rules. Time for shared state is
epoch seconds (`Clock.epoch()`), the one clock every gateway process agrees on.

Scopes: `rl:req:<key id>` (requests per minute), `rl:tok:<key id>` (tokens per minute),
and `core.budget.period_key("key:<key id>", period, now)` for key budgets.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import trio
from attrs import frozen

from adapters.clock import Clock
from adapters.storage.base import Storage
from adapters.storage.records import KeyRecord
from core import budget, ratelimit
from core.billing import worst_case_cost
from core.catalog import Price
from core.errors import BudgetExceeded, RateLimited


@frozen
class Grant:
    """What one attempt may spend: `max_output_tokens` (None: uncapped) and the reservation."""

    max_output_tokens: int | None
    reserved: Decimal | None  # key-budget reservation, None when the key has no budget
    scope: str | None


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

    def rpm(self, key: KeyRecord) -> int | None:
        """The key's requests per minute: its own, else the configured default."""
        return key.rpm if key.rpm is not None else self._default_rpm

    def tpm(self, key: KeyRecord) -> int | None:
        """The key's tokens per minute: its own, else the configured default."""
        return key.tpm if key.tpm is not None else self._default_tpm

    async def take_rate(self, key: KeyRecord, tokens: int) -> dict[str, str]:
        """Count one request and `tokens` estimated tokens; raise RateLimited when over.

        All or nothing: a request refused by one bucket leaves the other as it was (a
        request too large for a limit is refused before any bucket is touched; when the
        tokens bucket refuses, the request already taken is refunded).
        """
        headers: dict[str, str] = {}
        now = self._clock.epoch()
        checks: list[tuple[ratelimit.Kind, int, float]] = []
        if (rpm := self.rpm(key)) is not None:
            checks.append(("requests", rpm, 1.0))
        if (tpm := self.tpm(key)) is not None:
            checks.append(("tokens", tpm, float(tokens)))
        for kind, per_minute, amount in checks:
            if ratelimit.never_fits(ratelimit.BucketSpec.per_minute(per_minute), amount):
                raise RateLimited(
                    f"Request too large for {kind} per minute: limit {per_minute}, "
                    f"this request needs about {int(amount)}"
                )
        taken: list[tuple[ratelimit.Kind, ratelimit.BucketSpec, float]] = []
        for kind, per_minute, amount in checks:
            spec = ratelimit.BucketSpec.per_minute(per_minute)
            scope = f"rl:{kind[:3]}:{key.id}"

            def apply(
                state: dict[str, Any] | None,
                spec: ratelimit.BucketSpec = spec,
                amount: float = amount,
            ) -> tuple[ratelimit.Allowed | ratelimit.Denied, dict[str, Any]]:
                bucket = ratelimit.Bucket.from_dict(state) if state else None
                decision, new = ratelimit.take(spec, bucket, amount, now)
                return decision, new.to_dict()

            decision = await self._storage.update_state(scope, apply)
            headers.update(ratelimit.headers(kind, spec, decision))
            if isinstance(decision, ratelimit.Allowed):
                taken.append((kind, spec, amount))
            else:
                headers.update(await self._refund(key, taken, now))
                err = RateLimited(
                    f"Rate limit reached for {kind} per minute ({per_minute}); "
                    f"retry after {ratelimit.retry_after_header(decision.retry_after)} s",
                    retry_after=decision.retry_after,
                )
                err.headers = {**headers, "retry-after": ratelimit.retry_after_header(decision.retry_after)}
                raise err
        return headers

    async def _refund(
        self,
        key: KeyRecord,
        taken: list[tuple[ratelimit.Kind, ratelimit.BucketSpec, float]],
        now: float,
    ) -> dict[str, str]:
        """Give back what this request took from buckets before another one refused it;
        return those buckets' headers as they stand after the refund."""
        headers: dict[str, str] = {}
        for kind, spec, amount in taken:

            def apply(
                state: dict[str, Any] | None,
                spec: ratelimit.BucketSpec = spec,
                amount: float = amount,
            ) -> tuple[ratelimit.Bucket, dict[str, Any]]:
                bucket = ratelimit.Bucket.from_dict(state) if state else None
                new = ratelimit.adjust(spec, bucket, -amount, now)
                return new, new.to_dict()

            with trio.CancelScope(shield=True):
                bucket = await self._storage.update_state(f"rl:{kind[:3]}:{key.id}", apply)
            reset = max(0.0, (spec.capacity - bucket.level) / spec.per_second)
            headers.update(ratelimit.headers(kind, spec, ratelimit.Allowed(bucket.level, reset)))
        return headers

    async def adjust_tokens(self, key: KeyRecord, delta: int) -> None:
        """Charge (or refund) the difference between estimated and real tokens."""
        tpm = self.tpm(key)
        if tpm is None or delta == 0:
            return
        spec = ratelimit.BucketSpec.per_minute(tpm)
        now = self._clock.epoch()

        def apply(state: dict[str, Any] | None) -> tuple[None, dict[str, Any]]:
            bucket = ratelimit.Bucket.from_dict(state) if state else ratelimit.Bucket(spec.capacity, now)
            return None, ratelimit.adjust(spec, bucket, float(delta), now).to_dict()

        await self._storage.update_state(f"rl:tok:{key.id}", apply)

    def _scope(self, key: KeyRecord) -> str | None:
        if key.budget_usd is None:
            return None
        return budget.period_key(f"key:{key.id}", key.budget_period, self._clock.wall())  # type: ignore[arg-type]

    async def grant(
        self,
        key: KeyRecord,
        rid: str,
        price: Price,
        input_tokens: int,
        wanted: int,
        request_remaining: Decimal | None,
        capped: bool,
    ) -> Grant:
        """Reserve the worst case of one attempt, capping output tokens to what fits.

        `wanted` is the output the caller asked for (or the deployment's maximum);
        `request_remaining` is what is left of the request's own `max_cost_usd`.
        With neither a key budget nor a request budget nothing is capped or reserved.
        """
        scope = self._scope(key)
        if scope is None:
            if request_remaining is None:
                return Grant(wanted if capped else None, None, None)
            fit = min(wanted, budget.max_output_tokens_that_fit(request_remaining, price, input_tokens))
            if fit < 1:
                raise BudgetExceeded(
                    "The request's max_cost_usd cannot pay for this request's input and one output token",
                    param="constraints.budget.max_cost_usd",
                )
            return Grant(fit, None, None)
        limit = key.budget_usd
        assert limit is not None

        def apply(state: dict[str, Any] | None) -> tuple[Grant | None, dict[str, Any]]:
            current = budget.BudgetState.from_dict(state) if state else budget.BudgetState(limit=limit)
            current = budget.with_limit(current, limit)
            available = current.available
            if request_remaining is not None:
                available = min(available, request_remaining)
            fit = min(wanted, budget.max_output_tokens_that_fit(available, price, input_tokens))
            if fit < 1:
                return None, current.to_dict()
            amount = worst_case_cost(input_tokens, fit, price)
            decision, current = budget.reserve(current, rid, amount)
            if not isinstance(decision, budget.Reserved):
                return None, current.to_dict()
            return Grant(fit, amount, scope), current.to_dict()

        granted = await self._storage.update_state(scope, apply)
        if granted is None:
            raise BudgetExceeded(
                "The key's budget cannot pay for this request",
                param=None if request_remaining is None else "constraints.budget.max_cost_usd",
            )
        return granted

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
        scope = self._scope(key)
        if scope is None:
            return None
        state = await self._storage.read_state(scope)
        assert key.budget_usd is not None
        return budget.BudgetState.from_dict(state) if state else budget.BudgetState(limit=key.budget_usd)
