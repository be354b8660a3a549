"""A run's end: how it ended, and its one ledger row.

Owns: what a run that did not finish on its own ended as (`stopped`: cut by
`Run.cancel`, the client gone, or canceled by its owner; `halted`: the gateway's own
grant or settle not made, the attempt under way ending "halted"), and `end`, which
writes the run's one ledger row whatever happened (idempotent, shielded from
cancellation): a grant never used released first, the outcome (`core.outcome`), the
overhead, the row, then the ingress's watch, the observers and the tokens-per-minute
correction. A row the database cannot take or refuses is logged on `umg.ledger` (with
request id, tenant, key id and cost) instead of raised: the client has its answer.
"""

from __future__ import annotations

import logging

import trio

from adapters import watching
from adapters.execution import ledger_row
from adapters.ingress import new_id
from adapters.run_grants import release_unused
from adapters.run_state import RunState, step
from adapters.storage.records import UsageRecord
from core import attempts, metering
from core.errors import ClientClosed, GatewayError, StorageUnavailable
from core.outcome import Canceled, Failed, Happened, outcome

ledger_log = logging.getLogger("umg.ledger")


def stopped(state: RunState, *, outside: bool) -> Happened:
    """How a run that did not finish on its own ended (cut, client gone, canceled)."""
    exe = state.exe_or_none
    error: GatewayError = ClientClosed("The client closed the request before the answer ended")
    if exe is not None and exe.attempts is not None and not exe.attempts.done:
        for action in step(state, attempts.ClientGone()):
            if isinstance(action, attempts.Fail):
                error = action.error
    if not outside and state.cut is not None:
        return Failed(state.cut)
    if outside and state.ingress.outside_cancel == "canceled":
        return Canceled()
    return Failed(error)


def halted(state: RunState, error: GatewayError) -> Failed:
    """The run failed with `error`, the gateway's own (a grant or settle not made): the
    attempt being made, if any, ends as "halted" (`attempts.Halted`), not "in_flight"."""
    exe = state.exe_or_none
    if exe is not None and exe.attempts is not None and not exe.attempts.done:
        step(state, attempts.Halted(error))  # its one action is this Failed
    return Failed(error)


async def end(state: RunState, happened: Happened, *, shielded: bool = False) -> None:
    """Write this run's one ledger row (idempotent; shielded from cancellation: in a
    shield scope of its own, or, `shielded`, in the caller's, adapters/driver.py)."""
    if state.recorded:
        return
    state.recorded = True
    if shielded:
        await _end(state, happened)
        return
    with trio.CancelScope(shield=True):
        await _end(state, happened)


async def _end(state: RunState, happened: Happened) -> None:
    exe, d = state.exe, state.driver
    await release_unused(state)
    try:
        exe.outcome = outcome(happened)
        state.stopwatch.ended = ended = d.clock.now()
        exe.overhead_ms = state.stopwatch.overhead_ms(ended)
        row = ledger_row(exe, new_id("use"), d.clock.wall(), ended, _client_id(state))
        # alone: no other run is open, so no batch could form (group_commit.py)
        await d.storage.insert_usage(row, alone=len(d.runs) <= 1)
    except d.storage.errors as err:  # away, or the row refused: logged for re-entry
        d.runs.discard(state)
        why = "database unreachable" if isinstance(err, StorageUnavailable) else "refused"
        ledger_log.error(
            "ledger row not written (%s): request_id=%s tenant=%s key_id=%s cost_usd=%s"
            " status=%s: %s: %s", why, exe.request_id, exe.key.tenant, exe.key.id,
            exe.cost, exe.outcome.status if exe.outcome else None, type(err).__name__, err,
        )
        return
    afterwards = state.ingress.afterwards
    try:
        if state.ingress.watch is not None:
            state.ingress.watch(exe)
        now = d.clock.now()
        if afterwards is not None and afterwards.defer(lambda: _after_row(state, row, happened, ended, now)):
            return  # after the answer's last byte (adapters/afterwards.py)
        await _after_row(state, row, happened, ended, now)
    finally:
        d.runs.discard(state)


async def _after_row(state: RunState, row: UsageRecord, happened: Happened, ended: float, now: float) -> None:
    """What follows the row (`now`: when it was written): the observers told the run
    finished, then the tokens-per-minute correction."""
    exe, d = state.exe, state.driver
    try:
        if state.watch is not None:
            _watch_finished(state, row, happened, now - ended, now)
        if exe.plan is not None:
            charged = metering.charged_tokens(exe.input_estimate, exe.request.max_output_tokens)
            await d.limits.adjust_tokens(exe.key, metering.tokens_correction(charged, exe.usage))
    except StorageUnavailable as err:  # the row is in; only the bucket is off
        ledger_log.warning(
            "tokens-per-minute bucket not corrected after the row of request_id=%s"
            " (database unreachable): %s", exe.request_id, err,
        )


def _client_id(state: RunState) -> str | None:
    """The client's own x-request-id for the ledger row (None: it sent none)."""
    shown = state.ingress.client_request_id
    return shown if shown is not None and shown != state.request_id else None


def _watch_finished(state: RunState, row: UsageRecord, happened: Happened, ledger_seconds: float,
                    now: float) -> None:
    watch = state.watch
    assert watch is not None
    if state.watched is not None:  # cut inside an attempt (client gone, shutdown)
        cut = watching.attempt_cut(state.watched, now)
        state.told_ends += (cut,)
        watch.attempt_ended(cut)
        state.watched = None
    error = happened.error if isinstance(happened, Failed) else None
    overhead = state.stopwatch.overhead_ms(now)
    watch.run_finished(watching.finished(
        state.exe, row, error, overhead, ledger_seconds, now, state.told_ends, state.told_ttft
    ))
