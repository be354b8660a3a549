"""Which budgets cover a request: its key's, its project's and its tenant's.

Owns: naming the budgets that apply to a key (for `Limits.grant`, the 402 message and
`GET /v1/usage`), the storage scope of each one's current period, and a short-lived
per-process cache of the project and tenant budget definitions, so a request does not
read the `budgets` table.

Rules:
- A key is covered by (in this order, which is also the order a tie on what is left is
  named in a refusal): its own budget (`budget_usd` / `budget_period` on the key), the
  budget of its (tenant, project), and the budget of its tenant (`project` "").
  Each that exists applies; a request must fit all of them (`core.grants.grant_all`).
- Scopes, per period (`core.budget.period_key`): `key:<key id>:<period>`,
  `budget:project:<tenant>:<project>:<period>`, `budget:tenant:<tenant>:<period>`,
  with tenant and project percent-encoded (so a ':' in a name cannot make two budgets
  share a scope).
- Definitions are read per tenant and reused for `BUDGET_CACHE_SECONDS` of the monotonic
  clock; `forget(tenant)` drops them at once (a change through this process). So a
  budget set through another process (or `umg budgets set`) applies here within that
  time. The limit is applied to the stored state on every grant (`budget.with_limit`),
  so a changed limit never loses what was spent or held.
- One read per tenant at a time: requests that miss while a read of the same tenant's
  definitions is in flight wait for it and take its answer (an expiry under load costs
  one read, not one per request in flight). A `forget` meanwhile makes that answer
  unstored and its waiters read again; so does a failed read.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import cast
from urllib.parse import quote

import trio
from attrs import frozen

from adapters.clock import Clock
from adapters.storage.base import Storage
from adapters.storage.records import BudgetRecord, KeyRecord
from core import budget
from core.grants import KEY_BUDGET_LABEL, BudgetKind

BUDGET_CACHE_SECONDS = 1.0
PERIODS = ("day", "month", "total")


@frozen
class Covering:
    """One budget that covers a key, in its current period."""

    kind: BudgetKind
    label: str  # names it in a 402: "The key's budget", "The budget of project 'p' ..."
    tenant: str
    project: str | None  # None: not a project budget
    limit: Decimal
    period: budget.Period
    scope: str  # the state row of the current period


def _q(name: str) -> str:
    return quote(name, safe="")


def _per(period: str) -> str:
    return "in total" if period == "total" else f"per {period}"


def project_base(tenant: str, project: str) -> str:
    return f"budget:project:{_q(tenant)}:{_q(project)}"


def tenant_base(tenant: str) -> str:
    return f"budget:tenant:{_q(tenant)}"


def check_period(period: str) -> budget.Period:
    if period not in PERIODS:
        raise ValueError(f"budget period must be day, month or total, not {period!r}")
    return cast(budget.Period, period)


def budget_record(
    tenant: str, project: str, limit: Decimal, period: str, at: datetime
) -> BudgetRecord:
    """A checked definition (ValueError for a blank tenant, a bad period or limit)."""
    if not tenant or tenant != tenant.strip() or project != project.strip():
        raise ValueError("tenant must be non-empty; tenant and project without outer spaces")
    budget.with_limit(budget.BudgetState(limit=Decimal(0)), limit)  # a finite amount >= 0
    return BudgetRecord(tenant, project, limit, check_period(period), at)


class BudgetBook:
    def __init__(self, storage: Storage, clock: Clock, ttl: float = BUDGET_CACHE_SECONDS) -> None:
        self._storage = storage
        self._clock = clock
        self._ttl = ttl
        self._cache: dict[str, tuple[float, tuple[BudgetRecord, ...]]] = {}
        self._reading: dict[str, trio.Event] = {}  # tenant -> set when its read ends
        self._generation = 0  # forget() calls so far: a read across one is not stored

    def forget(self, tenant: str) -> None:
        self._cache.pop(tenant, None)
        self._generation += 1
        pending = self._reading.pop(tenant, None)
        if pending is not None:
            pending.set()  # its waiters read again: the answer in flight may be stale

    async def put(self, rec: BudgetRecord) -> None:
        """Set a budget (it applies to this process at once, to others within the TTL)."""
        await self._storage.put_budget(rec)
        self.forget(rec.tenant)

    async def definitions(self, tenant: str) -> tuple[BudgetRecord, ...]:
        """The tenant's project and tenant budgets (cached, see the module rules)."""
        while True:
            now = self._clock.now()
            hit = self._cache.get(tenant)
            if hit is not None and hit[0] > now:
                return hit[1]
            pending = self._reading.get(tenant) if self._ttl > 0 else None
            if pending is None:
                break
            await pending.wait()
        done = self._reading[tenant] = trio.Event()
        generation = self._generation
        try:
            found = tuple(await self._storage.list_budgets(tenant))
            if generation == self._generation:
                if len(self._cache) > 10_000:  # bounded: drop the lot, they are re-read on use
                    self._cache.clear()
                self._cache[tenant] = (now + self._ttl, found)
        finally:
            if self._reading.get(tenant) is done:
                del self._reading[tenant]
            done.set()
        return found

    async def covering(self, key: KeyRecord) -> tuple[Covering, ...]:
        """Every budget that covers `key`'s requests now (see the module rules)."""
        at = self._clock.wall()
        found: list[Covering] = []
        if key.budget_usd is not None:
            period = check_period(key.budget_period)
            found.append(Covering("key", KEY_BUDGET_LABEL, key.tenant, None, key.budget_usd,
                                  period, budget.period_key(f"key:{key.id}", period, at)))
        by_project = {r.project: r for r in await self.definitions(key.tenant)}
        if (rec := by_project.get(key.project)) is not None and key.project:
            period = check_period(rec.budget_period)
            label = f"The budget of project '{key.project}' (tenant '{key.tenant}', {_per(period)})"
            found.append(Covering("project", label, key.tenant, key.project, rec.budget_usd, period,
                                  budget.period_key(project_base(key.tenant, key.project), period, at)))
        if (rec := by_project.get("")) is not None:
            period = check_period(rec.budget_period)
            label = f"The budget of tenant '{key.tenant}' ({_per(period)})"
            found.append(Covering("tenant", label, key.tenant, None, rec.budget_usd, period,
                                  budget.period_key(tenant_base(key.tenant), period, at)))
        return tuple(found)
