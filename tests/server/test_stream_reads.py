"""A provider stream read by read: the pieces one upstream read completed are relayed
together, metered and capped piece by piece exactly as one by one.

- The driver gives a surface that asks (`drive(emit, together=True)`) a read's pieces as
  one `Pieces` event, in order; any other surface (and a read of one piece) gets them
  one by one. Nothing is held across reads: each read's pieces are emitted before the
  next read is asked for.
- A piece over the output cap inside a read is neither emitted nor followed by any; the
  ledger row bills the cap.
- The SSE writer sends a read's pieces in one body message, the bytes of each piece's
  frame in order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import trio

from adapters.driver import Ingress, new_id
from adapters.events import Done, Metered, Pieces, RunEvent, Started
from adapters.providers.base import Timeouts
from adapters.storage.records import UsageRecord
from core.catalog import Deployment
from core.model import (
    Completion,
    GatewayRequest,
    Message,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    Usage,
    UsageReport,
)
from server.keepalive import KeepAliveTicker
from server.pipeline import Streamed
from server.routes.chat import ChatFramer
from server.streaming import send_stream
from tests.server.conftest import Running


class ScriptedReads:
    """A provider whose stream is `reads`, each list what one upstream read completed;
    `seen` logs each read as it is taken, between the events the surface was given."""

    def __init__(self, reads: Sequence[Sequence[StreamEvent]], seen: list[str]) -> None:
        self.name = "mock"
        self.reads = reads
        self.seen = seen

    async def complete(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> Completion:
        raise AssertionError("only streams here")

    async def stream(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> AsyncIterator[StreamEvent]:
        async for read in self.stream_reads(deployment, request, timeouts=timeouts):
            for event in read:
                yield event

    async def stream_reads(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> AsyncIterator[list[StreamEvent]]:
        for n, read in enumerate(self.reads):
            self.seen.append(f"read {n}")
            yield list(read)


def request(cap: int | None = None) -> GatewayRequest:
    return GatewayRequest(
        model="mock-fast", messages=(Message("user", (TextPart("hi"),)),), stream=True,
        max_output_tokens=cap,
    )


async def rows(gw: Running) -> list[UsageRecord]:
    now = datetime.now(UTC)
    found: list[UsageRecord] = await gw.services.storage.usage_rows(
        "t1", now - timedelta(days=1), now + timedelta(days=1)
    )
    return found


def use(gw: Running, reads: Sequence[Sequence[StreamEvent]], seen: list[str]) -> None:
    providers = gw.services.gateway.providers
    assert isinstance(providers, dict)
    providers["mock"] = ScriptedReads(reads, seen)


async def open_run(gw: Running, cap: int | None = None) -> Any:
    async def parse() -> GatewayRequest:
        return request(cap)

    run = gw.services.gateway.driver.run(
        Ingress(request_id=new_id("req"), endpoint="chat.completions", parse=parse, token=gw.key)
    )
    await run.open()
    return run


A, B, C, D = TextDelta("a"), TextDelta(" b"), TextDelta(" c"), TextDelta(" d")
READS: list[list[StreamEvent]] = [
    [A],
    [B, UsageReport(Usage(input_tokens=7, output_tokens=2)), C, D],
    [UsageReport(Usage(input_tokens=7, output_tokens=4)), StreamEnd("stop")],
]


async def drive(gw: Running, *, together: bool, cap: int | None = None) -> tuple[list[RunEvent], list[str]]:
    seen: list[str] = []
    use(gw, READS, seen)
    run = await open_run(gw, cap)

    async def emit(event: RunEvent) -> None:
        seen.append(type(event).__name__)
        got.append(event)

    got: list[RunEvent] = []
    try:
        await run.drive(emit, together=together)
    finally:
        await run.close()
    return got, seen


async def test_a_reads_pieces_come_together_to_a_surface_that_asks(gateway: Running) -> None:
    got, seen = await drive(gateway, together=True)
    assert got[0] == Started()
    assert got[1:3] == [A, Pieces((B, C, D))]
    assert isinstance(got[3], Metered) and got[3].usage.output_tokens == 4
    assert got[4] == Done("stop")
    # each read's pieces went out before the next read was taken
    assert seen[:5] == ["Started", "read 0", "TextDelta", "read 1", "Pieces"], seen
    [row] = await rows(gateway)
    assert (row.status, row.input_tokens, row.output_tokens) == ("ok", 7, 4)


async def test_other_surfaces_get_a_reads_pieces_one_by_one(gateway: Running) -> None:
    got, seen = await drive(gateway, together=False)
    assert got[1:5] == [A, B, C, D]
    assert seen[:7] == ["Started", "read 0", "TextDelta", "read 1", "TextDelta", "TextDelta", "TextDelta"]
    [row] = await rows(gateway)
    assert (row.status, row.output_tokens) == ("ok", 4)


async def test_a_piece_over_the_cap_inside_a_read_is_not_relayed_nor_any_after_it(
    gateway: Running,
) -> None:
    got, _ = await drive(gateway, together=True, cap=2)
    # the cap is 2: `a` (read 0) and ` b` go out; ` c` is over it, ` d` after it
    assert got[1:3] == [A, B]
    assert got[-1] == Done("length")
    [row] = await rows(gateway)
    assert (row.status, row.output_tokens) == ("ok", 2)


async def test_the_sse_writer_sends_a_reads_pieces_in_one_message(gateway: Running) -> None:
    use(gateway, READS, [])
    run = await open_run(gateway)
    framer = ChatFramer(run.exe, 0, True, "req_x")
    twin = ChatFramer(run.exe, 0, True, "req_x")  # the same bytes, piece by piece
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with trio.fail_after(10):
        await send_stream(send, Streamed(run, framer, {}), keepalive=60.0, ticker=KeepAliveTicker())
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    twin.start(run.exe)
    assert bodies[1] == twin.event(run.exe, A)
    assert bodies[2] == twin.event(run.exe, B) + twin.event(run.exe, C) + twin.event(run.exe, D)
    assert len(bodies) == 4 and sent[-1]["more_body"] is False
    assert bodies[3].endswith(b"data: [DONE]\n\n")
