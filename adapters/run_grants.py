"""One attempt's budget grant in a run: taken, settled with what was consumed, released.

Owns: asking `Limits.grant` for an attempt's grant (`core.grants.Ask`), settling it with
the metered usage (the run's usage, cost and price version added up, the observers told)
or releasing it when nothing was consumed, releasing a grant never used without failing
the row (logged on `umg.ledger`; `Limits` keeps the reservation until the database is
back), and the 503 a client gets when the database refused a limits update with its
own error (its words only in the log).
"""

from __future__ import annotations

import logging

from adapters import watching
from adapters.limits import Grant
from adapters.run_state import RunState
from core import attempts, grants
from core.billing import cost
from core.errors import StorageUnavailable
from core.model import Usage

ledger_log = logging.getLogger("umg.ledger")


async def take_grant(state: RunState, action: attempts.CallProvider) -> Grant:
    exe, dep = state.exe, action.deployment
    ask = grants.Ask(
        rid=grants.rid(exe.request_id, action.attempt),
        price=dep.price,
        input_tokens=exe.input_estimate,
        wanted=grants.wanted_output(exe.request.max_output_tokens, dep.max_output_tokens),
        capped=exe.request.max_output_tokens is not None,
        request_remaining=grants.request_remaining(exe.request.max_cost_usd, exe.cost),
    )
    state.grant = await state.driver.limits.grant(exe.key, ask)
    state.grant_attempt = action.attempt
    return state.grant


async def settle(state: RunState, usage: Usage | None) -> None:
    """Settle the open grant with `usage` (release it when nothing was consumed)."""
    grant, state.grant = state.grant, None
    if grant is None:
        return
    exe, limits = state.exe, state.driver.limits
    rid = grants.rid(exe.request_id, state.grant_attempt)
    if usage is None or exe.deployment is None:
        await limits.release(grant, rid)
        return
    spent = cost(usage, exe.deployment.price)
    exe.usage = exe.usage + usage
    exe.answer_usage = usage
    exe.cost += spent
    exe.price_version = exe.deployment.price.version
    if state.watch is not None:
        state.watch.metered(watching.metered(state.grant_attempt, usage, spent))
    await limits.settle(grant, rid, spent)


async def release_unused(state: RunState) -> None:
    """Release a grant taken but never used. Its failure costs no ledger row: it is
    logged, and `Limits` keeps the reservation until the database is back."""
    try:
        await settle(state, None)
    except state.driver.storage.errors + (StorageUnavailable,) as err:
        ledger_log.warning(
            "reservation of request_id=%s not released (database unreachable), kept"
            " until it is back: %s: %s", state.exe.request_id, type(err).__name__, err,
        )


def refused_by_storage(state: RunState, err: Exception) -> StorageUnavailable:
    """A rate take, grant or settle the database refused with its own error, as the
    503 the client gets (the database's words only in the log)."""
    ledger_log.warning("limits of request_id=%s not updated, the database refused: %s: %s",
                       state.request_id, type(err).__name__, err)
    return StorageUnavailable("The gateway's database refused this request's limits update;"
                              " try again shortly")
