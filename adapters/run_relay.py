"""A provider call read by read: each upstream read metered, capped and relayed in order.

Owns: the provider call as the events of each upstream read (`calls`: `stream_reads` of
a provider that has it, else `Provider.stream`'s events one by one for a streamed
request, `Provider.complete` as one read otherwise), the wait for the next read (the
stopwatch's), the notes before the first content (usage reports metered, the
upstream's ids noted: `absorb`), and `relay`: every event of a read metered
(`core.metering`) before the read's pieces are emitted (one `Pieces` when the surface
asked for them together; never held across reads), a piece over the cap neither
emitted nor followed by any.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import cast

from adapters.events import CallEvent, Emit, Pieces, Upstream, whole_as_reads
from adapters.providers.base import ProviderError, ReadsStreams
from adapters.run_state import RunState
from core import metering
from core.catalog import Deployment
from core.model import (
    FailureKind,
    FinishReason,
    GatewayRequest,
    StreamEnd,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)

# what `relay` tells apart per event, as tuples (`A | B` in `isinstance` builds a union
# object at every call)
_PIECES = (TextDelta, ToolCallDelta)
_NOTES = (UsageReport, Upstream)


def calls(state: RunState, dep: Deployment, request: GatewayRequest) -> AsyncIterator[Sequence[CallEvent]]:
    """The provider call as the events of each upstream read (each list non-empty)."""
    d = state.driver
    provider = d.providers.get(dep.provider)
    if provider is None:
        raise ProviderError(FailureKind.CONNECT, f"no provider configured for '{dep.provider}'")
    if not request.stream:
        return whole_as_reads(provider, dep, request, d.timeouts)
    if d.reads_streams(dep.provider, provider):
        return cast(ReadsStreams, provider).stream_reads(dep, request, timeouts=d.timeouts)
    return _one_by_one(provider.stream(dep, request, timeouts=d.timeouts))


async def next_read(state: RunState, reads: AsyncIterator[Sequence[CallEvent]]) -> Sequence[CallEvent] | None:
    """The events of the next upstream read; None at the end (the wait is the stopwatch's)."""
    clock = state.driver.clock
    waiting = clock.now()
    try:
        return await reads.__anext__()
    except StopAsyncIteration:
        return None
    finally:
        state.stopwatch.waited += clock.now() - waiting


def absorb(state: RunState, read: Sequence[CallEvent], at: int) -> int:
    """Meter the usage reports and note the upstream's ids from `read[at:]` up to its
    first content (a piece or the end); where that is (len(read): none)."""
    for i in range(at, len(read)):
        item = read[i]
        if not isinstance(item, _NOTES):
            return i
        _note(state, item)
    return len(read)


def _note(state: RunState, item: UsageReport | Upstream) -> None:
    """An event that is not content: a usage report metered, the upstream's ids noted."""
    if isinstance(item, UsageReport):
        state.meter = metering.observe(state.meter, item)
    else:
        state.exe.upstream_model, state.exe.upstream_id = item.model, item.id


async def relay(state: RunState, read: Sequence[CallEvent], at: int, emit: Emit) -> FinishReason | None:
    """Meter `read[at:]` and emit its pieces (one `Pieces` when together), up to its
    end or the first piece over the cap (not emitted); the finish reason if either."""
    if at == 0 and len(read) == 1 and type(read[0]) is TextDelta:  # a paced stream's usual read
        state.meter = meter = metering.observe(state.meter, read[0])
        if metering.over_cap(meter):
            return "length"
        await emit(read[0])
        return None
    pieces: list[TextDelta | ToolCallDelta] = []
    end: FinishReason | None = None
    observe, over_cap = metering.observe, metering.over_cap  # once per read, not per piece
    for i in range(at, len(read)):
        item = read[i]
        if isinstance(item, _PIECES):
            state.meter = meter = observe(state.meter, item)
            if over_cap(meter):
                end = "length"
                break
            pieces.append(item)
        elif isinstance(item, StreamEnd):
            end = item.finish_reason
            break
        elif isinstance(item, _NOTES):
            _note(state, item)
    if len(pieces) == 1:
        await emit(pieces[0])
    elif pieces and state.together:
        await emit(Pieces(tuple(pieces)))
    else:
        for piece in pieces:
            await emit(piece)
    return end


async def _one_by_one(events: AsyncIterator[CallEvent]) -> AsyncIterator[Sequence[CallEvent]]:
    """A provider's stream without reads of its own: each event its own read."""
    try:
        async for event in events:
            yield [event]
    finally:
        await events.aclose()  # type: ignore[attr-defined]
