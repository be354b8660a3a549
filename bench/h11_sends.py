"""CPU per response through Hypercorn's HTTP/1.1 send path: its own classes beside the
patched ones of `server/hypercorn_patch.py`, in one process, alternating.

Owns: `python -m bench.h11_sends [--responses N] [--rounds R]`. Each response is the
ASGI messages the gateway sends: a JSON answer (`content-length`: start, one body) or a
20-chunk SSE stream (start marked `umg.head_with_body`, the opening frame, 20 chunks, the
last frame without `more_body`), given to an HTTP stream class's `app_send` (Hypercorn's
`HTTPStream` or `FramingHTTPStream`) over an HTTP/1.1 protocol class, into a real Trio
socket pair whose other end a reader task drains, through a connection class's
`protocol_send`: Hypercorn's `TCPServer` (a `trio.Lock`, a shielded cancel scope and
`send_all` per write) or `DirectSendTCPServer`. Prints, per kind, the median over the
rounds of the process CPU time per response and of the writes per response, for each
set of classes.
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
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState

from server.hypercorn_patch import (
    HEAD_WITH_BODY,
    CoalescingH11Protocol,
    DirectSendTCPServer,
    FramingHTTPStream,
)

REQUEST = b"POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n"
JSON_BODY = b'{"id":"chatcmpl-1","object":"chat.completion","choices":[]}' * 20
CHUNK = b'data: {"choices":[{"delta":{"content":"hello"}}]}\n\n'


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


def _messages(kind: str) -> list[dict[str, Any]]:
    """The ASGI messages of one answer, as the gateway sends them."""
    if kind == "json":
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(JSON_BODY))]
        return [{"type": "http.response.start", "status": 200, "headers": headers},
                {"type": "http.response.body", "body": JSON_BODY, "more_body": False}]
    headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
    body = {"type": "http.response.body", "body": CHUNK, "more_body": True}
    return [{"type": "http.response.start", "status": 200, "headers": headers, HEAD_WITH_BODY: True},
            *([body] * 21),  # the opening frame and 20 chunks
            {"type": "http.response.body", "body": CHUNK, "more_body": False}]  # the last frame


async def _respond(proto: H11Protocol, stream_class: type[HTTPStream], kind: str) -> None:
    proto.connection.receive_data(REQUEST)
    proto.connection.next_event()
    proto.connection.next_event()
    stream = stream_class(None, Config(), WorkerContext(None), TaskGroup(), False,  # type: ignore[arg-type]
                          None, None, proto.stream_send, 1)
    stream.scope = {"method": "POST", "http_version": "1.1"}  # type: ignore[typeddict-item]
    stream.start_time = 0.0
    stream.app_put = None  # type: ignore[assignment]  # no app behind it
    proto.stream = stream
    for message in _messages(kind):
        await stream.app_send(message)  # type: ignore[arg-type]  # recycles the connection at the end


async def _drain(stream: trio.SocketStream) -> None:
    while await stream.receive_some(65536):
        pass


Classes = tuple[type[H11Protocol], type[HTTPStream], type[TCPServer]]


async def _round(classes: Classes, kind: str, responses: int) -> tuple[float, float]:
    a, b = trio.socket.socketpair()
    left, right = trio.SocketStream(a), trio.SocketStream(b)
    cls, stream_class, server_class = classes
    server = server_class(None, Config(), WorkerContext(None), ConnectionState({}), left)  # type: ignore[arg-type]
    sink = _Sink(server)
    proto = _protocol(cls, sink)
    assert proto.connection.our_state is h11.IDLE
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drain, right)
        started = time.process_time()
        for _ in range(responses):
            await _respond(proto, stream_class, kind)
        used = time.process_time() - started
        await left.aclose()
    await right.aclose()
    return used / responses * 1e6, sink.sends / responses


async def main(responses: int, rounds: int) -> None:
    classes: list[tuple[str, Classes]] = [
        ("Hypercorn's classes", (H11Protocol, HTTPStream, TCPServer)),
        ("held head only", (CoalescingH11Protocol, HTTPStream, TCPServer)),
        ("held head + direct send", (CoalescingH11Protocol, HTTPStream, DirectSendTCPServer)),
        ("+ our chunk framing", (CoalescingH11Protocol, FramingHTTPStream, DirectSendTCPServer)),
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
