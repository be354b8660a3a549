"""CPU per response through Hypercorn's HTTP/1.1 send path: its own protocol class beside
`server/hypercorn_patch.CoalescingH11Protocol`, in one process, alternating.

Owns: `python -m bench.h11_sends [--responses N] [--rounds R]`. Each response is what the
gateway writes: a JSON answer (`content-length`: head, body, end) or a 20-chunk SSE
stream (head marked `umg.head_with_body`, opening frame, 20 chunks, last frame, end),
sent as Hypercorn's `HTTPStream` sends them, into a real Trio socket pair whose other end
a reader task drains, through a connection class's `protocol_send`: Hypercorn's
`TCPServer` (a `trio.Lock`, a shielded cancel scope and `send_all` per write) or
`DirectSendTCPServer`. Prints, per kind, the median over the rounds of the process CPU
time per response and of the writes per response, for each pair of classes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import h11
import trio
from hypercorn.config import Config
from hypercorn.events import RawData
from hypercorn.protocol.events import Body, EndBody, Response
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState

from server.hypercorn_patch import HEAD_WITH_BODY, CoalescingH11Protocol, DirectSendTCPServer

REQUEST = b"POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n"
JSON_BODY = b'{"id":"chatcmpl-1","object":"chat.completion","choices":[]}' * 20
CHUNK = b'data: {"choices":[{"delta":{"content":"hello"}}]}\n\n'


class _Stream:
    """What Hypercorn's HTTPStream keeps of the app's start message."""

    def __init__(self, start: dict[str, Any]) -> None:
        self.response = start


class _Sink:
    """A connection class's `protocol_send` on a real socket, counting the writes."""

    def __init__(self, server: TCPServer) -> None:
        self.server = server
        self.sends = 0

    async def send(self, event: object) -> None:
        if isinstance(event, RawData):
            self.sends += 1
            await self.server.protocol_send(event)


def _protocol(cls: type[H11Protocol], sink: _Sink) -> H11Protocol:
    proto = cls(None, Config(), WorkerContext(None), TaskGroup(), ConnectionState({}),  # type: ignore[arg-type]
                False, None, None, sink.send)
    return proto


async def _respond(proto: H11Protocol, kind: str) -> None:
    proto.connection.receive_data(REQUEST)
    proto.connection.next_event()
    proto.connection.next_event()
    if kind == "json":
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(JSON_BODY))]
        proto.stream = _Stream({"type": "http.response.start"})  # type: ignore[assignment]
        await proto.stream_send(Response(stream_id=1, headers=headers, status_code=200))
        await proto.stream_send(Body(stream_id=1, data=JSON_BODY))
        await proto.stream_send(EndBody(stream_id=1))
    else:
        headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        proto.stream = _Stream({"type": "http.response.start", HEAD_WITH_BODY: True})  # type: ignore[assignment]
        await proto.stream_send(Response(stream_id=1, headers=headers, status_code=200))
        for _ in range(22):  # the opening frame, 20 chunks, the last frame
            await proto.stream_send(Body(stream_id=1, data=CHUNK))
        await proto.stream_send(EndBody(stream_id=1))
    proto.connection.start_next_cycle()


async def _drain(stream: trio.SocketStream) -> None:
    while await stream.receive_some(65536):
        pass


Pair = tuple[type[H11Protocol], type[TCPServer]]


async def _round(pair: Pair, kind: str, responses: int) -> tuple[float, float]:
    a, b = trio.socket.socketpair()
    left, right = trio.SocketStream(a), trio.SocketStream(b)
    cls, server_class = pair
    server = server_class(None, Config(), WorkerContext(None), ConnectionState({}), left)  # type: ignore[arg-type]
    sink = _Sink(server)
    proto = _protocol(cls, sink)
    assert proto.connection.our_state is h11.IDLE
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drain, right)
        started = time.process_time()
        for _ in range(responses):
            await _respond(proto, kind)
        used = time.process_time() - started
        await left.aclose()
    await right.aclose()
    return used / responses * 1e6, sink.sends / responses


async def main(responses: int, rounds: int) -> None:
    classes: list[tuple[str, Pair]] = [
        ("Hypercorn's classes", (H11Protocol, TCPServer)),
        ("held head only", (CoalescingH11Protocol, TCPServer)),
        ("held head + direct send", (CoalescingH11Protocol, DirectSendTCPServer)),
    ]
    for kind in ("json", "stream"):
        seen: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in classes}
        for _ in range(rounds):
            for name, pair in classes:
                seen[name].append(await _round(pair, kind, responses))
        for name, _ in classes:
            cpu = statistics.median(us for us, _ in seen[name])
            sends = statistics.median(n for _, n in seen[name])
            print(f"{kind:6s} {name:24s} {cpu:8.1f} µs CPU/response  {sends:4.0f} writes/response")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    trio.run(main, args.responses, args.rounds)
