"""Budget grants: how much one attempt may spend, sized before the provider is called.

Owns: the sizing rule that turns a request's own `max_cost_usd` and its key's budget into
one attempt's output cap and reservation. The driver (adapters/driver.py) applies
`grant` to the key's stored `BudgetState` inside one atomic storage update, so the rule
here is the one that runs on the real path.

Rules:
- `wanted_output(asked, deployment_max)`: the output the attempt asks upstream for: the
  client's `max_output_tokens` when given (never above the deployment's maximum), else
  the deployment's maximum.
- `request_remaining(max_cost_usd, spent)`: what is left of the request's own budget
  after earlier attempts (None: the request has no budget of its own).
- `grant(ask, state)` with no key budget (`state` None) and no request budget: nothing
  is reserved, and output is capped only when the client asked for a maximum.
- Otherwise the money available is the key budget's `available` (when there is one)
  and at most the request's remaining budget; the cap is the largest output that fits
  it (`budget.max_output_tokens_that_fit`), at most `wanted`. A cap below 1 is a refusal
  (`BudgetExceeded`, naming `constraints.budget.max_cost_usd` when the request's own
  budget is in play); nothing is reserved then.
- With a key budget the worst case of the attempt (`billing.worst_case_cost(input,
  cap)`) is reserved under the attempt's rid (`budget.reserve`), so spent + reserved
  never exceeds the limit; a reservation the budget refuses is a refusal too.
- `rid(request_id, attempt)` names an attempt's reservation: "<request id>:<attempt>".
- Several budgets may cover one request (its key's, its project's, its tenant's):
  `grant_all(ask, covers)` is one decision over all of them, all or nothing. The money
  available is the least any of them leaves (and at most the request's remaining
  budget); the same worst case is reserved under the same rid in every one, or in none.
  A refusal names the budget that refused (`Cover.label`): the one leaving the least,
  the first of those in `covers` order on a tie. So spent + reserved never exceeds the
  limit of any budget that covers the request. `grant(ask, state)` is the case of one
  key budget (or none).
- `settle_all` / `release_all` apply `budget.settle` / `budget.release` for one rid to
  every covering budget (each idempotent per rid, so a retried settle charges once).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Literal, TypeAlias

from attrs import frozen

from core import budget
from core.billing import worst_case_cost
from core.catalog import Price
from core.errors import BudgetExceeded

REQUEST_BUDGET_PARAM = "constraints.budget.max_cost_usd"
KEY_BUDGET_LABEL = "The key's budget"

BudgetKind = Literal["key", "project", "tenant"]


@frozen
class Ask:
    """What one attempt asks for."""

    rid: str
    price: Price
    input_tokens: int
    wanted: int  # output tokens the attempt would ask upstream for
    capped: bool  # the client asked for a maximum (so upstream is told one)
    request_remaining: Decimal | None  # what is left of max_cost_usd; None: no request budget


@frozen
class Granted:
    max_output_tokens: int | None  # None: uncapped
    reserved: Decimal | None  # None: nothing held in the key's budget


@frozen
class Refused:
    error: BudgetExceeded
    budget: BudgetKind | None = None  # the budget that refused; None: the request's own


@frozen
class Cover:
    """One budget that covers the request, as it is now."""

    kind: BudgetKind
    label: str  # how a refusal names it: "The key's budget", "The budget of project ..."
    state: budget.BudgetState


Decision: TypeAlias = Granted | Refused


def rid(request_id: str, attempt: int) -> str:
    return f"{request_id}:{attempt}"


def wanted_output(asked: int | None, deployment_max: int) -> int:
    return min(asked, deployment_max) if asked is not None else deployment_max


def request_remaining(max_cost_usd: Decimal | None, spent: Decimal) -> Decimal | None:
    return None if max_cost_usd is None else max_cost_usd - spent


def _fit(ask: Ask, available: Decimal) -> int:
    return min(ask.wanted, budget.max_output_tokens_that_fit(available, ask.price, ask.input_tokens))


def _refused(ask: Ask, message: str) -> Refused:
    param = None if ask.request_remaining is None else REQUEST_BUDGET_PARAM
    return Refused(BudgetExceeded(message, param=param))


def _binding(covers: Sequence[Cover]) -> Cover:
    """The budget that leaves the least (the first such on a tie)."""
    return min(covers, key=lambda c: c.state.available)


def _budget_refused(ask: Ask, cover: Cover) -> Refused:
    state = cover.state
    message = (
        f"{cover.label} cannot pay for this request ({state.available} USD left"
        f" of {state.limit} USD)"
    )
    return Refused(BudgetExceeded(message), cover.kind)


def grant_all(
    ask: Ask, covers: Sequence[Cover]
) -> tuple[Decision, tuple[budget.BudgetState, ...]]:
    """Size one attempt and reserve its worst case in EVERY covering budget, or in none.

    The states come back in `covers` order, updated (unchanged on a refusal)."""
    before = tuple(c.state for c in covers)
    if not covers:
        decision, _ = grant(ask, None)
        return decision, ()
    binding = _binding(covers)
    available = binding.state.available
    if ask.request_remaining is not None and ask.request_remaining < available:
        available = ask.request_remaining
        if _fit(ask, available) < 1:
            return _refused(ask, "The request's max_cost_usd cannot pay for this request"), before
    fit = _fit(ask, available)
    if fit < 1:
        return _budget_refused(ask, binding), before
    amount = worst_case_cost(ask.input_tokens, fit, ask.price)
    after: list[budget.BudgetState] = []
    for cover in covers:
        held, state = budget.reserve(cover.state, ask.rid, amount)
        if not isinstance(held, budget.Reserved) or held.amount != amount:
            return _budget_refused(ask, cover), before  # e.g. the rid was closed already
        after.append(state)
    return Granted(fit, amount), tuple(after)


def settle_all(
    states: Sequence[budget.BudgetState], rid: str, actual: Decimal
) -> tuple[budget.BudgetState, ...]:
    """Charge `actual` for `rid` in every budget that holds it (idempotent per rid)."""
    return tuple(budget.settle(s, rid, actual)[1] for s in states)


def release_all(states: Sequence[budget.BudgetState], rid: str) -> tuple[budget.BudgetState, ...]:
    """Drop `rid`'s reservation from every budget (idempotent per rid)."""
    return tuple(budget.release(s, rid) for s in states)


def grant(ask: Ask, state: budget.BudgetState | None) -> tuple[Decision, budget.BudgetState | None]:
    """Size (and, with a key budget, reserve) one attempt; the state is returned updated."""
    if state is None:
        if ask.request_remaining is None:
            return Granted(ask.wanted if ask.capped else None, None), None
        fit = _fit(ask, ask.request_remaining)
        if fit < 1:
            return _refused(
                ask,
                "The request's max_cost_usd cannot pay for this request's input and one output token",
            ), None
        return Granted(fit, None), None
    decision, (after,) = grant_all(ask, (Cover("key", KEY_BUDGET_LABEL, state),))
    return decision, after
