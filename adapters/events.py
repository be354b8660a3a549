"""What the request driver says as a run goes: neutral events, and a sync answer from them.

Owns: the events `adapters/driver.py` emits, the same for every surface (`Started`;
`TextDelta` / `ToolCallDelta` from core.model as the answer arrives; then `Metered` and
`Done`, or `RunFailed`), the `Collector` that turns them back into a whole `Completion`
(the sync answer is a collected stream), and `whole_as_reads`, which makes a provider's
`complete` one read of a stream like `stream_reads` (so the driver has one attempt loop).
A surface that asks for it (`Run.drive(emit, together=True)`) gets the pieces one
upstream read completed as one `Pieces` event, to send them in one write; any other
surface gets them one by one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias

from attrs import frozen

from adapters.execution import Execution
from adapters.providers.base import Provider, Timeouts
from core.catalog import Deployment
from core.errors import GatewayError
from core.model import (
    NO_USAGE,
    Completion,
    FinishReason,
    GatewayRequest,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageReport,
)


@frozen
class Started:
    """Admitted and about to call: a streaming surface sends its opening frames."""


@frozen
class Metered:
    usage: Usage  # of the attempt that answered


@frozen
class Done:
    finish_reason: FinishReason


@frozen
class RunFailed:
    error: GatewayError


@frozen
class Pieces:
    """Two or more pieces one upstream read completed, in order (only to a surface that
    asked for them together: it frames each and sends them at once)."""

    items: tuple[TextDelta | ToolCallDelta, ...]


RunEvent: TypeAlias = Started | TextDelta | ToolCallDelta | Pieces | Metered | Done | RunFailed
Emit = Callable[[RunEvent], Awaitable[None]]


@frozen
class Upstream:
    """What a whole answer says about itself (not a client-visible event)."""

    model: str | None
    id: str | None


CallEvent: TypeAlias = StreamEvent | Upstream
STARTED = Started()


class Collector:
    """Turns a run's events back into a whole `Completion` (the sync answer)."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, list[str]] = {}
        self.usage = NO_USAGE
        self.finish: FinishReason | None = None
        self.error: GatewayError | None = None

    async def __call__(self, event: RunEvent) -> None:
        if isinstance(event, TextDelta):
            self.text.append(event.text)
        elif isinstance(event, ToolCallDelta):
            call = self.calls.setdefault(event.index, ["", "", ""])
            call[0] = event.id or call[0]
            call[1] = event.name or call[1]
            call[2] += event.arguments
        elif isinstance(event, Metered):
            self.usage = event.usage
        elif isinstance(event, Done):
            self.finish = event.finish_reason
        elif isinstance(event, RunFailed):
            self.error = event.error
        elif isinstance(event, Pieces):
            for item in event.items:
                await self(item)

    def completion(self, exe: Execution) -> Completion:
        if self.error is not None:
            raise self.error
        assert self.finish is not None, "a run ended without Done or Failed"
        return Completion(
            text="".join(self.text),
            finish_reason=self.finish,
            usage=self.usage,
            tool_calls=tuple(ToolCall(i, n, a) for _, (i, n, a) in sorted(self.calls.items())),
            upstream_model=exe.upstream_model,
            upstream_id=exe.upstream_id,
        )



class WholeAsReads:
    """`Provider.complete` as a stream of one read: usage, the answer's pieces, its end.

    An object, not an async generator: nothing is open between its reads (the call is
    over when its one read is given), so closing it never waits (no checkpoint: the
    attempt loop needs no shield to close it), and Trio's async-generator hooks (a weak
    set and a finalizer per generator) are not involved."""

    __slots__ = ("_dep", "_provider", "_request", "_timeouts")

    def __init__(self, provider: Provider | None, dep: Deployment, request: GatewayRequest,
                 timeouts: Timeouts) -> None:
        self._provider = provider  # None once read or closed
        self._dep = dep
        self._request = request
        self._timeouts = timeouts

    def __aiter__(self) -> WholeAsReads:
        return self

    async def __anext__(self) -> list[CallEvent]:
        provider, self._provider = self._provider, None
        if provider is None:
            raise StopAsyncIteration
        completion = await provider.complete(self._dep, self._request, timeouts=self._timeouts)
        read: list[CallEvent] = [
            UsageReport(completion.usage), Upstream(completion.upstream_model, completion.upstream_id)
        ]
        if completion.text:
            read.append(TextDelta(completion.text))
        read.extend(
            ToolCallDelta(index, call.id, call.name, call.arguments)
            for index, call in enumerate(completion.tool_calls)
        )
        read.append(StreamEnd(completion.finish_reason))
        return read

    async def aclose(self) -> None:
        """No wait: there is nothing open to close."""
        self._provider = None


def whole_as_reads(
    provider: Provider, dep: Deployment, request: GatewayRequest, timeouts: Timeouts
) -> WholeAsReads:
    """`Provider.complete` as a stream of one read (`WholeAsReads`)."""
    return WholeAsReads(provider, dep, request, timeouts)
