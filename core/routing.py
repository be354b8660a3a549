"""Routing: which deployments to try for one request, in what order.

Owns: turning a request, the catalog and the health book into a `RoutePlan` — the
ordered deployments the attempt machine will try — and the explanation of every
deployment left out. Pure: `now` and `draw` (one uniform number in [0, 1)) are arguments.

Rules:
- Candidates are `catalog.candidates(request.model)`: the model's own deployments, then
  those of its fallback models (an unknown model raises `UnknownModel`).
- Filters run as stages, in this order; each deployment is dropped by the first stage it
  fails, recorded in `dropped` as `(deployment id, reason)`:
    1. allow_providers (None: every provider) — "provider not in allow_providers"
    2. deny_providers — "provider in deny_providers"
    3. capabilities — tools in the request need "tools", an image part in any message
       needs "vision", `response_format` of type json_object / json_schema needs "json"
    4. context — `input_tokens > context_window`
    5. budget (only with `max_cost_usd`) — dropped when even the minimal answer does not
       fit: `worst_case_cost(input_tokens, 1, price) > max_cost_usd`. A deployment that
       stays may still cost more with a long answer; the server caps `max_tokens` to what
       the budget affords before calling.
- When no deployment survives, the stage that removed the last survivors names the
  error: budget -> `BudgetExceeded(param="constraints.budget.max_cost_usd")`; allow ->
  `NoRouteAvailable(param="constraints.routing.allow_providers")`; deny -> the same with
  "constraints.routing.deny_providers"; capabilities and context -> `NoRouteAvailable`
  whose message names the reason (param None: the request field differs per wire format).
- Order. The survivors split into four groups, in this order: the requested model's
  available deployments, the fallback models' available deployments, then the requested
  model's and the fallback models' deployments whose circuit is not `available` (kept
  as a last resort). The requested model always comes before its fallbacks; an open
  circuit always comes after every closed one. The strategy orders each group:
    cost        expected cost ascending: input_tokens x input price + an assumed output
                of min(request.max_output_tokens or 256, deployment max_output_tokens)
                x output price (exact Decimal); ties by id
    latency     health latency EWMA ascending; unknown latency after every known one;
                ties by id
    reliability Laplace-smoothed success rate descending; ties by id
    weighted    the draw picks the first deployment with probability weight / sum of
                weights (walking the group in id order: the first whose cumulative
                weight exceeds draw x sum); the rest follow by weight descending, then
                id. Weight-0 deployments are never drawn; a group whose weights are all
                0 is ordered by id. The same draw is used for each group.
- Deterministic: equal inputs give an equal plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import TypeAlias

from attrs import frozen

from core.billing import worst_case_cost
from core.catalog import Catalog, Deployment
from core.errors import BudgetExceeded, GatewayError, NoRouteAvailable
from core.health import DeploymentHealth, HealthPolicy, available, latency, success_rate
from core.model import GatewayRequest, ImagePart, Strategy

ASSUMED_OUTPUT_TOKENS = 256  # the cost strategy's output guess when the request sets none
_JSON_FORMATS = frozenset({"json_object", "json_schema"})


@frozen
class RoutePlan:
    deployments: tuple[Deployment, ...]  # non-empty, in the order to try
    strategy: Strategy
    dropped: tuple[tuple[str, str], ...] = ()  # (deployment id, reason), for explanation


# ---- filters -------------------------------------------------------------------------------


def required_capabilities(request: GatewayRequest) -> frozenset[str]:
    """The capabilities a deployment needs to serve `request`."""
    needs: set[str] = set()
    if request.tools:
        needs.add("tools")
    if any(isinstance(p, ImagePart) for m in request.messages for p in m.content):
        needs.add("vision")
    fmt = request.response_format
    if isinstance(fmt, Mapping) and fmt.get("type") in _JSON_FORMATS:
        needs.add("json")
    return frozenset(needs)


@frozen
class _Stage:
    """One filter: `reject` returns a reason to drop a deployment, or None to keep it."""

    name: str
    reject: Callable[[Deployment], str | None]
    error: Callable[[], GatewayError]


def _stages(request: GatewayRequest, input_tokens: int, *, every: bool) -> tuple[_Stage, ...]:
    """The filter stages, in order. Unless `every`, only those that can drop something:
    a stage with nothing to check (no allow list, an empty deny list, no capability
    needed, no `max_cost_usd`) keeps every deployment, so leaving it out changes neither
    the survivors, nor `dropped`, nor which stage names the error, as long as there is a
    candidate at all (with none, the first stage's error is raised: `every`). Most
    requests need the context stage alone."""
    r = request.routing
    allow, deny = r.allow_providers, r.deny_providers
    needs = required_capabilities(request)
    budget = request.max_cost_usd
    model = request.model
    stages: list[_Stage] = []

    if every or allow is not None:
        def not_allowed(d: Deployment) -> str | None:
            return None if allow is None or d.provider in allow else "provider not in allow_providers"

        stages.append(_Stage("allow", not_allowed, lambda: NoRouteAvailable(
            f"No deployment of '{model}' is from a provider in allow_providers",
            param="constraints.routing.allow_providers")))

    if every or deny:
        def denied(d: Deployment) -> str | None:
            return "provider in deny_providers" if d.provider in deny else None

        stages.append(_Stage("deny", denied, lambda: NoRouteAvailable(
            f"Every allowed deployment of '{model}' is from a provider in deny_providers",
            param="constraints.routing.deny_providers")))

    if every or needs:
        def lacks(d: Deployment) -> str | None:
            missing = sorted(needs - d.capabilities)
            return f"missing capability: {', '.join(missing)}" if missing else None

        stages.append(_Stage("capabilities", lacks, lambda: NoRouteAvailable(
            f"No deployment of '{model}' supports what the request needs "
            f"({', '.join(sorted(needs))})")))

    def too_long(d: Deployment) -> str | None:
        if input_tokens > d.context_window:
            return f"input of {input_tokens} tokens exceeds context window {d.context_window}"
        return None

    stages.append(_Stage("context", too_long, lambda: NoRouteAvailable(
        f"The input (~{input_tokens} tokens) exceeds the context window of every "
        f"deployment of '{model}'")))

    if every or budget is not None:
        def over_budget(d: Deployment) -> str | None:
            if budget is None:
                return None
            minimal = worst_case_cost(input_tokens, 1, d.price)
            return f"minimal cost {minimal} exceeds max_cost_usd {budget}" if minimal > budget else None

        stages.append(_Stage("budget", over_budget, lambda: BudgetExceeded(
            f"Every deployment of '{model}' costs more than max_cost_usd {budget} for "
            "this input", param="constraints.budget.max_cost_usd")))
    return tuple(stages)


def _filter(
    candidates: tuple[Deployment, ...], stages: tuple[_Stage, ...]
) -> tuple[tuple[Deployment, ...], tuple[tuple[str, str], ...]]:
    kept = candidates
    dropped: list[tuple[str, str]] = []
    for stage in stages:
        survivors: list[Deployment] = []
        for d in kept:
            reason = stage.reject(d)
            if reason is None:
                survivors.append(d)
            else:
                dropped.append((d.id, reason))
        if not survivors:
            raise stage.error()
        kept = tuple(survivors)
    return kept, tuple(dropped)


# ---- ordering -------------------------------------------------------------------------------

Health: TypeAlias = Mapping[str, DeploymentHealth]
Order: TypeAlias = Callable[[list[Deployment]], list[Deployment]]


def _by_cost(request: GatewayRequest, input_tokens: int) -> Order:
    def expected(d: Deployment) -> tuple[Decimal, str]:
        out = min(request.max_output_tokens or ASSUMED_OUTPUT_TOKENS, d.max_output_tokens)
        return input_tokens * d.price.input + out * d.price.output, d.id

    return lambda group: sorted(group, key=expected)


def _by_latency(health: Health) -> Order:
    def key(d: Deployment) -> tuple[bool, float, str]:
        seconds = latency(health.get(d.id))
        return seconds is None, 0.0 if seconds is None else seconds, d.id

    return lambda group: sorted(group, key=key)


def _by_reliability(health: Health) -> Order:
    return lambda group: sorted(group, key=lambda d: (-success_rate(health.get(d.id)), d.id))


def _weighted(draw: float) -> Order:
    def order(group: list[Deployment]) -> list[Deployment]:
        rest = sorted(group, key=lambda d: (-d.weight, d.id))
        total = sum(d.weight for d in group)
        if total <= 0:
            return rest
        target = draw * total
        drawable = [d for d in sorted(group, key=lambda d: d.id) if d.weight > 0]
        first = drawable[-1]  # if float rounding lifted draw x total up to total
        cumulative = 0
        for d in drawable:
            cumulative += d.weight
            if target < cumulative:
                first = d
                break
        return [first, *(x for x in rest if x.id != first.id)]

    return order


# strategy -> its order, from (request, health, draw, input_tokens)
_ORDERS: Mapping[Strategy, Callable[[GatewayRequest, Health, float, int], Order]] = MappingProxyType({
    "cost": lambda request, health, draw, input_tokens: _by_cost(request, input_tokens),
    "latency": lambda request, health, draw, input_tokens: _by_latency(health),
    "reliability": lambda request, health, draw, input_tokens: _by_reliability(health),
    "weighted": lambda request, health, draw, input_tokens: _weighted(draw),
})


def _order(
    strategy: Strategy, request: GatewayRequest, health: Health, draw: float, input_tokens: int
) -> Order:
    return _ORDERS[strategy](request, health, draw, input_tokens)


# ---- the plan -------------------------------------------------------------------------------


def plan(
    request: GatewayRequest,
    catalog: Catalog,
    health: Health,
    *,
    now: float,
    draw: float,
    input_tokens: int,
    policy: HealthPolicy = HealthPolicy(),  # noqa: B008 - frozen, so a shared default is safe
) -> RoutePlan:
    """The deployments to try for `request`, in order (see the module rules)."""
    if not (math.isfinite(draw) and 0.0 <= draw < 1.0):
        raise ValueError(f"draw must be in [0, 1), not {draw!r}")
    if input_tokens < 0:
        raise ValueError(f"input_tokens must be >= 0, not {input_tokens}")
    own_ids = {d.id for d in catalog.resolve(request.model).deployments}
    candidates = catalog.candidates(request.model)
    kept, dropped = _filter(candidates, _stages(request, input_tokens, every=not candidates))
    strategy = request.routing.strategy
    order = _order(strategy, request, health, draw, input_tokens)
    groups: tuple[list[Deployment], ...] = ([], [], [], [])
    for d in kept:
        up = available(health.get(d.id), now, policy)
        groups[(0 if up else 2) + (0 if d.id in own_ids else 1)].append(d)
    ordered = tuple(d for group in groups for d in order(group))
    return RoutePlan(deployments=ordered, strategy=strategy, dropped=dropped)
