"""A run's attempt loop: every `core.attempts` action performed, one provider call each.

Owns: `loop`, the only loop that drives the run's attempt machine (call a provider,
sleep until a retry's time, finish, fail; the observers told how each attempt ended),
and one attempt: its grant (the one taken at admission, else a new one), the request
capped to the grant's output, the half-open probe (`HealthBook.begin_attempt`), the
attempt's deadline until the first content, the first chunk (after which there is no
fallback), the reads relayed (adapters/run_relay.py) up to the end, and what the
attempt became: `Completed(usage)` or `AttemptFailed` (a provider error, a stream cut
short, the deadline passed), its grant settled either way, its health observed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import trio
from attrs import evolve

from adapters import watching
from adapters.events import CallEvent, Emit, WholeAsReads
from adapters.providers.base import ProviderError
from adapters.run_grants import settle, take_grant
from adapters.run_relay import absorb, calls, next_read, relay
from adapters.run_state import RunState, step
from core import attempts, metering
from core.catalog import Deployment
from core.model import FailureKind, FinishReason, Usage
from core.outcome import Answered, Failed, Happened

_LATE = "no answer before the attempt deadline"


async def loop(state: RunState, emit: Emit) -> Happened:
    actions = state.actions
    while True:
        event: attempts.Event | None = None
        for action in actions:
            if isinstance(action, attempts.CallProvider):
                event = await _attempt(state, action, emit)
            elif isinstance(action, attempts.SleepUntil):
                slept = state.driver.clock.now()
                await trio.sleep_until(action.at)
                state.stopwatch.waited += state.driver.clock.now() - slept
                event = attempts.Woke()
            elif isinstance(action, attempts.Finish):
                return Answered()
            elif isinstance(action, attempts.Fail):
                return Failed(action.error)
        assert event is not None, "the attempt machine produced no action to act on"
        actions = step(state, event)
        if state.watch is not None and state.watched is not None:
            ended = watching.attempt_ended(state.watched, event, actions, state.exe, state.driver.clock.now())
            state.told_ends += (ended,)
            state.watch.attempt_ended(ended)
            state.watched = None


async def _attempt(state: RunState, action: attempts.CallProvider, emit: Emit) -> attempts.Event:
    exe, dep, d = state.exe, action.deployment, state.driver
    exe.deployment = dep
    grant = state.grant if state.grant_attempt == action.attempt and state.grant else None
    grant = grant or await take_grant(state, action)
    request = exe.request
    if grant.max_output_tokens is not None and grant.max_output_tokens != request.max_output_tokens:
        request = evolve(request, max_output_tokens=grant.max_output_tokens)  # else it is the same
    state.meter = metering.Meter(exe.input_estimate, grant.max_output_tokens, not request.stream)
    started = d.clock.now()
    d.health.begin_attempt(dep.id, started)
    if state.watch is not None:
        state.watched = action
        provider = d.providers.get(dep.provider)
        state.watch.attempt_started(watching.attempt_started(action, provider, started))
    failure: ProviderError | None = None
    reads: AsyncIterator[Sequence[CallEvent]] | None = None
    try:
        reads = calls(state, dep, request)
        at = 0
        # until the first content (`fail_at`'s scope without its generator around it)
        with trio.move_on_at(action.deadline) as first_content:
            read = await next_read(state, reads)
            while read is not None and (at := absorb(state, read, 0)) == len(read):
                read = await next_read(state, reads)
        if first_content.cancelled_caught:
            raise ProviderError(FailureKind.TIMEOUT, _LATE)
        if request.stream:
            exe.ttft = d.clock.now() - exe.started
        if read is not None:
            # the first chunk: no fallback from here on (the machine asks for nothing)
            asked = step(state, attempts.FirstChunk())
            assert not asked, asked
            if state.watch is not None:
                first = watching.first_chunk(action, exe, d.clock.now())
                state.told_ttft = first.ttft
                state.watch.first_chunk(first)
        now, stopwatch, following = d.clock.now, state.stopwatch, reads.__anext__
        while read is not None:
            end = await relay(state, read, at, emit)
            if end is not None:
                return await _answered(state, dep, started, end)
            # `next_read`, inline: one coroutine fewer per relayed read
            waiting = now()
            try:
                read = await following()
            except StopAsyncIteration:
                read = None
            finally:
                stopwatch.waited += now() - waiting
            at = 0
        failure = ProviderError(FailureKind.STREAM_CUT, "the provider's stream ended without an end event")
    except ProviderError as err:
        failure = err
    except trio.TooSlowError:
        failure = ProviderError(FailureKind.TIMEOUT, _LATE)
    finally:
        if state.grant is None and type(reads) is WholeAsReads:
            # settled already, and a whole answer's reads close without a checkpoint:
            # nothing here can be cancelled, so no shield (a cancel scope is ~48 k
            # instructions)
            await reads.aclose()
        else:
            with trio.CancelScope(shield=True):
                if reads is not None:
                    await reads.aclose()  # type: ignore[attr-defined]
                await settle(state, metering.consumed(state.meter))
    assert failure is not None
    _observe(state, dep, started, failure)
    return attempts.AttemptFailed(failure.kind, failure.retry_after, failure.message)


async def _answered(state: RunState, dep: Deployment, started: float, reason: FinishReason) -> attempts.Event:
    usage = metering.consumed(state.meter) or Usage(input_tokens=state.exe.input_estimate)
    _observe(state, dep, started, None)
    state.exe.finish_reason = reason
    await settle(state, usage)
    return attempts.Completed(usage)


def _observe(state: RunState, dep: Deployment, started: float, error: ProviderError | None) -> None:
    now = state.driver.clock.now()
    state.driver.health.observe(dep.id, error is None, now - started, error.kind if error else None, now)
