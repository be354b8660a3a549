"""Drives the core's attempt machine: calls providers, sleeps, feeds outcomes back.

Owns: the one loop that performs `core.attempts` actions for a request, whole or
streamed. For every `CallProvider` it asks the gateway for a budget grant, caps the
request's output to it, calls the provider under the attempt's deadline, records the
outcome in the health book, settles or releases the grant, and feeds the resulting event
back into the machine. The machine alone decides retry, fallback or failure.

Streaming rules:
- Events before the first content (usage reports) are held back; the first text,
  tool-call piece or end is the "first chunk": only then does the machine learn that the
  client has seen something, and from then on there is no fallback.
- Output is cut at the grant's cap: a provider streaming past `max_output_tokens` (each
  content delta counts as at least one token, or the provider's own running count when
  larger) is closed, the client gets an explicit `length` end, and the real cost is
  settled. Output counted by guessing (deltas, text estimate) is capped at the grant's
  cap, which upstream was sent as its max tokens; only a provider-reported count can
  exceed it.
- If the consumer goes away (the generator is closed or cancelled), the upstream stream
  is closed, the machine gets `ClientGone`, and what was consumed is settled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from decimal import Decimal

import trio

from adapters.clock import Clock
from adapters.execution import Execution
from adapters.health_book import HealthBook
from adapters.limits import Grant
from adapters.providers.base import Provider, ProviderError, Timeouts
from core import attempts
from core.billing import cost
from core.catalog import Deployment
from core.errors import GatewayError
from core.model import (
    Completion,
    FailureKind,
    GatewayRequest,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Usage,
    UsageReport,
)
from core.tokens import estimate_text_tokens

GrantFn = Callable[[Execution, Deployment, int], Awaitable[Grant]]
SettleFn = Callable[[Execution, Grant, int, Usage | None], Awaitable[None]]


class Runner:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        health: HealthBook,
        clock: Clock,
        policy: attempts.AttemptPolicy,
        timeouts: Timeouts,
        grant: GrantFn,
        settle: SettleFn,
    ) -> None:
        self._providers = providers
        self._health = health
        self._clock = clock
        self._policy = policy
        self._timeouts = timeouts
        self._grant = grant
        self._settle = settle

    def _provider(self, deployment: Deployment) -> Provider:
        provider = self._providers.get(deployment.provider)
        if provider is None:
            raise ProviderError(
                FailureKind.CONNECT, f"no provider configured for '{deployment.provider}'"
            )
        return provider

    def _observe(self, d: Deployment, started: float, error: ProviderError | None) -> None:
        now = self._clock.now()
        kind = error.kind if error else None
        self._health.observe(d.id, error is None, now - started, kind, now)

    def _capped(self, request: GatewayRequest, grant: Grant) -> GatewayRequest:
        if grant.max_output_tokens is None:
            return request
        from attrs import evolve

        return evolve(request, max_output_tokens=grant.max_output_tokens)

    def _start(self, exe: Execution) -> tuple[attempts.Attempts, tuple[attempts.Action, ...]]:
        assert exe.plan is not None
        state, actions = attempts.start(exe.plan.deployments, self._policy, self._clock.now())
        exe.attempts = state
        return state, actions

    def _step(self, exe: Execution, event: attempts.Event) -> tuple[attempts.Action, ...]:
        assert exe.attempts is not None
        exe.attempts, actions = attempts.step(exe.attempts, event, self._clock.now())
        return actions

    async def complete(self, exe: Execution) -> Completion:
        """Run a whole (non-streamed) request; raises the machine's error on failure."""
        _, actions = self._start(exe)
        result: Completion | None = None
        while True:
            event: attempts.Event | None = None
            for action in actions:
                if isinstance(action, attempts.CallProvider):
                    event, result = await self._call_once(exe, action)
                elif isinstance(action, attempts.SleepUntil):
                    await trio.sleep_until(action.at)
                    event = attempts.Woke()
                elif isinstance(action, attempts.Finish):
                    assert result is not None
                    return result
                elif isinstance(action, attempts.Fail):
                    raise action.error
            assert event is not None, "the attempt machine produced no action to act on"
            actions = self._step(exe, event)

    async def _call_once(
        self, exe: Execution, action: attempts.CallProvider
    ) -> tuple[attempts.Event, Completion | None]:
        d = action.deployment
        exe.deployment = d
        grant = await self._grant(exe, d, action.attempt)
        started = self._clock.now()
        self._health.begin_attempt(d.id, started)
        try:
            with trio.fail_at(action.deadline):
                completion = await self._provider(d).complete(
                    d, self._capped(exe.request, grant), timeouts=self._timeouts
                )
        except ProviderError as err:
            self._observe(d, started, err)
            await self._settle(exe, grant, action.attempt, None)
            return attempts.AttemptFailed(err.kind, err.retry_after, err.message), None
        except trio.TooSlowError:
            err = ProviderError(FailureKind.TIMEOUT, "attempt deadline passed")
            self._observe(d, started, err)
            await self._settle(exe, grant, action.attempt, None)
            return attempts.AttemptFailed(FailureKind.TIMEOUT, None, err.message), None
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._settle(exe, grant, action.attempt, None)
            raise
        self._observe(d, started, None)
        await self._settle(exe, grant, action.attempt, completion.usage)
        return attempts.Completed(completion.usage), completion

    async def stream(self, exe: Execution) -> AsyncIterator[StreamEvent]:
        """Run a streamed request. Yields content events; a failure raises GatewayError.

        A failure after content was yielded also raises: the caller must end its stream
        with an explicit error event, never a clean end.
        """
        _, actions = self._start(exe)
        try:
            while True:
                event: attempts.Event | None = None
                for action in actions:
                    if isinstance(action, attempts.CallProvider):
                        holder: list[attempts.Event] = []
                        async with aclosing(self._stream_once(exe, action, holder)) as inner:
                            async for item in inner:
                                yield item
                        event = holder[0]
                    elif isinstance(action, attempts.SleepUntil):
                        await trio.sleep_until(action.at)
                        event = attempts.Woke()
                    elif isinstance(action, attempts.Finish):
                        return
                    elif isinstance(action, attempts.Fail):
                        raise action.error
                assert event is not None, "the attempt machine produced no action to act on"
                actions = self._step(exe, event)
        except (GeneratorExit, trio.Cancelled):
            if exe.attempts is not None and not exe.attempts.done:
                self._step(exe, attempts.ClientGone())
            raise

    async def _stream_once(
        self, exe: Execution, action: attempts.CallProvider, outcome: list[attempts.Event]
    ) -> AsyncIterator[StreamEvent]:
        d = action.deployment
        exe.deployment = d
        grant = await self._grant(exe, d, action.attempt)
        cap = grant.max_output_tokens
        started = self._clock.now()
        self._health.begin_attempt(d.id, started)
        reported: Usage | None = None
        pieces = 0
        streamed: list[str] = []
        settled = False

        def consumed() -> Usage | None:
            if reported is None and not streamed:
                return None
            base = reported or Usage()
            guess = max(pieces, estimate_text_tokens("".join(streamed)) if reported is None else 0)
            if cap is not None:
                # upstream was told max_tokens=cap: a guess (pieces, text estimate) never
                # bills past it; only the provider's own count may (it is the real bill)
                guess = min(guess, cap)
            counted = max(base.output_tokens, guess)
            if base.input_tokens == 0 and base.cached_input_tokens == 0:
                base = Usage(input_tokens=exe.input_estimate)
            return Usage(
                input_tokens=base.input_tokens,
                output_tokens=counted,
                cached_input_tokens=base.cached_input_tokens,
                cache_write_tokens=base.cache_write_tokens,
                reasoning_tokens=base.reasoning_tokens,
            )

        agen = self._provider(d).stream(d, self._capped(exe.request, grant), timeouts=self._timeouts)

        async def next_content() -> StreamEvent | None:
            nonlocal reported
            async for item in agen:
                if isinstance(item, UsageReport):
                    reported = item.usage
                    continue
                return item
            return None

        async def finish(end: StreamEnd) -> StreamEnd:
            nonlocal settled
            usage = consumed() or Usage(input_tokens=exe.input_estimate)
            self._observe(d, started, None)
            settled = True
            await self._settle(exe, grant, action.attempt, usage)
            outcome.append(attempts.Completed(usage))
            return end

        try:
            try:
                with trio.fail_at(action.deadline):
                    item = await next_content()
                exe.ttft = self._clock.now() - exe.started
                if item is not None:
                    self._step(exe, attempts.FirstChunk())
                while item is not None:
                    if isinstance(item, StreamEnd):
                        yield await finish(item)
                        return
                    pieces += 1
                    if isinstance(item, TextDelta):
                        streamed.append(item.text)
                    if cap is not None and max(pieces, reported.output_tokens if reported else 0) > cap:
                        yield await finish(StreamEnd("length"))
                        return
                    yield item
                    item = await next_content()
                raise ProviderError(
                    FailureKind.STREAM_CUT, "the provider's stream ended without an end event"
                )
            except ProviderError as err:
                self._observe(d, started, err)
                settled = True
                await self._settle(exe, grant, action.attempt, consumed())
                outcome.append(attempts.AttemptFailed(err.kind, err.retry_after, err.message))
            except trio.TooSlowError:
                self._observe(d, started, ProviderError(FailureKind.TIMEOUT, "timeout"))
                settled = True
                await self._settle(exe, grant, action.attempt, consumed())
                outcome.append(
                    attempts.AttemptFailed(FailureKind.TIMEOUT, None, "no answer before the attempt deadline")
                )
        finally:
            with trio.CancelScope(shield=True):
                await agen.aclose()  # type: ignore[attr-defined]
                if not settled:
                    await self._settle(exe, grant, action.attempt, consumed())


def attempt_cost(usage: Usage | None, deployment: Deployment) -> Decimal:
    return Decimal(0) if usage is None else cost(usage, deployment.price)


__all__ = ["GatewayError", "Runner", "attempt_cost"]
