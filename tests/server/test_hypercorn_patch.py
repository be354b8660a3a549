"""Fewer, cheaper socket sends per HTTP/1.1 response (server/hypercorn_patch.py, rules
2 to 4), on a real server and on the protocol classes themselves.

Every `send_all` of the in-process gateway's sockets is recorded (the real one still
runs): a JSON answer leaves in one send, head and body together, with no empty send for
the end of its body; an SSE stream's head leaves with its opening frame, and the chunks
after it still leave one send each, as they come; a head whose body may wait (an app
that did not say its body follows) is sent at once. Our own chunk framing writes the
bytes Hypercorn and h11 write, byte for byte, for every kind of answer, and a stream's
last frame goes out with the chunked terminator.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import h11
import hypercorn.protocol
import hypercorn.trio.run as hypercorn_run
import pytest
import trio
from hypercorn.config import Config
from hypercorn.events import Closed, RawData
from hypercorn.protocol.events import Body, EndBody, Response, StreamClosed
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState

from server import hypercorn_patch
from server.hypercorn_patch import (
    HEAD_WITH_BODY,
    CoalescingH11Protocol,
    DirectSendTCPServer,
    FramingHTTPStream,
    body_part_sender,
)
from tests.server.conftest import Running

BODY = {"model": "mock-fast", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, bytes]]]:
    """(connection id, bytes) of every write the server's connections make, in order."""
    seen: list[tuple[int, bytes]] = []
    direct = DirectSendTCPServer.write_now
    hypercorns = TCPServer.protocol_send

    def written_now(self: DirectSendTCPServer, data: bytes) -> int:  # what the kernel took
        taken = direct(self, data)
        if taken:
            seen.append((id(self), bytes(data[:taken])))
        return taken

    async def sent_their_way(self: TCPServer, event: Any) -> None:  # the rest: Hypercorn's send_all
        if isinstance(event, RawData):
            seen.append((id(self), bytes(event.data)))
        await hypercorns(self, event)

    monkeypatch.setattr(DirectSendTCPServer, "write_now", written_now)
    monkeypatch.setattr(TCPServer, "protocol_send", sent_their_way)
    yield seen


def _answer_sends(seen: list[tuple[int, bytes]]) -> list[bytes]:
    """The server's sends of the last response: from its head on, on the head's socket."""
    heads = [i for i, (_, data) in enumerate(seen) if data.startswith(b"HTTP/1.1 ")]
    assert heads, "no response head was sent"
    first = heads[-1]
    stream = seen[first][0]
    return [data for sid, data in seen[first:] if sid == stream]


async def test_the_classes_are_installed_for_served_connections(gateway: Running) -> None:
    assert hypercorn.protocol.H11Protocol is CoalescingH11Protocol
    # (server/hypercorn_tasks.py's idle timer is installed on top: a subclass)
    assert issubclass(hypercorn_run.TCPServer, DirectSendTCPServer)
    hypercorn_patch.install()  # idempotent
    assert hypercorn.protocol.H11Protocol is CoalescingH11Protocol
    assert issubclass(hypercorn_run.TCPServer, DirectSendTCPServer)


async def test_a_json_answer_leaves_in_one_send(gateway: Running, sends: list[tuple[int, bytes]]) -> None:
    async with gateway.client() as client:
        got = await client.post("/v1/chat/completions", json=BODY)
    assert got.status_code == 200 and got.json()["object"] == "chat.completion"
    out = _answer_sends(sends)
    assert len(out) == 1, out
    assert out[0].endswith(got.content)
    assert b"content-length: " in out[0].lower()


async def test_an_error_answer_from_quart_leaves_in_one_send(
    gateway: Running, sends: list[tuple[int, bytes]]
) -> None:
    async with gateway.client() as client:
        got = await client.get("/v1/chat/completions")
    assert got.status_code == 405
    out = _answer_sends(sends)
    assert len(out) == 1 and out[0].endswith(got.content)


async def test_a_stream_head_leaves_with_its_opening_frame_and_chunks_one_by_one(
    gateway: Running, sends: list[tuple[int, bytes]]
) -> None:
    async with gateway.client() as client:
        async with client.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as s:
            streamed = b"".join([part async for part in s.aiter_bytes()])
    assert streamed.rstrip().endswith(b"data: [DONE]")
    out = _answer_sends(sends)
    head, _, first_frame = out[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
    assert b'"role":"assistant"' in first_frame  # the opening frame, in the head's send
    frames = [data for data in out[1:] if b"data: " in data]
    content = [data for data in frames if b'"content":' in data]
    assert len(content) >= 2  # the mock's text in several chunks, each its own send
    assert all(data.count(b"data: ") <= 2 for data in content)
    assert all(data for data in out)  # no empty sends


def _protocol(sent: list[bytes]) -> CoalescingH11Protocol:
    async def send(event: Any) -> None:
        if isinstance(event, RawData):
            sent.append(event.data)

    proto = CoalescingH11Protocol(
        None, Config(), WorkerContext(None), TaskGroup(), ConnectionState({}),  # type: ignore[arg-type]
        False, None, None, send,
    )
    proto.connection.receive_data(b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n")
    assert isinstance(proto.connection.next_event(), h11.Request)
    proto.connection.next_event()  # its (empty) end
    return proto


async def test_a_chunked_head_the_app_did_not_vouch_for_is_sent_at_once() -> None:
    sent: list[bytes] = []
    proto = _protocol(sent)
    await proto.stream_send(Response(stream_id=1, headers=[(b"content-type", b"text/event-stream")],
                                     status_code=200))
    assert len(sent) == 1 and sent[0].startswith(b"HTTP/1.1 200")  # not held: its body may wait
    await proto.stream_send(Body(stream_id=1, data=b"data: 1\n\n"))
    await proto.stream_send(EndBody(stream_id=1))
    assert sent[1:] == [b"9\r\ndata: 1\n\n\r\n", b"0\r\n\r\n"]


async def test_a_held_head_is_sent_before_the_stream_closes() -> None:
    sent: list[bytes] = []
    proto = _protocol(sent)

    class _Stream:  # what HTTPStream keeps: the app's start message
        response = {"type": "http.response.start", "status": 200, HEAD_WITH_BODY: True}

        async def handle(self, event: object) -> None:
            pass

    proto.stream = _Stream()  # type: ignore[assignment]
    await proto.stream_send(Response(stream_id=1, headers=[], status_code=200))
    assert sent == []  # held for the body that follows
    await proto.stream_send(StreamClosed(stream_id=1))  # the app ended without a body
    assert len(sent) == 1 and sent[0].startswith(b"HTTP/1.1 200")


class _Told:
    """The protocol side of a connection: what the connection told it."""

    def __init__(self) -> None:
        self.events: list[object] = []

    async def handle(self, event: object) -> None:
        self.events.append(event)


def _connection() -> tuple[DirectSendTCPServer, trio.SocketStream, _Told]:
    left, right = trio.socket.socketpair()
    server = DirectSendTCPServer(
        None, Config(), WorkerContext(None), ConnectionState({}),  # type: ignore[arg-type]
        trio.SocketStream(left),  # type: ignore[arg-type]
    )
    told = _Told()
    server.protocol = told  # type: ignore[assignment]
    return server, trio.SocketStream(right), told


async def test_direct_writes_keep_order_and_a_slow_reader_holds_the_writer_back() -> None:
    server, peer, told = _connection()
    parts = [bytes([n]) * 200_000 for n in range(40)]  # 8 MB: far past the socket buffers
    received = bytearray()
    async with trio.open_nursery() as nursery:
        done = trio.Event()

        async def write() -> None:
            for part in parts:
                await server.protocol_send(RawData(data=part))
            done.set()

        nursery.start_soon(write)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()  # the peer reads nothing yet: the writer waits (back-pressure)
        while len(received) < sum(map(len, parts)):
            received += await peer.receive_some(65536)
            await trio.sleep(0)  # a slow reader
    assert bytes(received) == b"".join(parts) and told.events == []


async def test_a_write_to_a_connection_the_peer_closed_tells_the_protocol() -> None:
    server, peer, told = _connection()
    await server.protocol_send(RawData(data=b"HTTP/1.1 200 OK\r\n\r\n"))  # straight through
    assert await peer.receive_some(100) == b"HTTP/1.1 200 OK\r\n\r\n"
    await peer.aclose()
    for _ in range(3):  # the first write after a close may still be accepted by the kernel
        await server.protocol_send(RawData(data=b"x" * 1000))
    assert [type(e) for e in told.events][:1] == [Closed]


# ---- a chunked body framed by us (rule 4) -------------------------------------------------


def served_stream(protocol_class: type[H11Protocol], stream_class: type[HTTPStream],
                  request: bytes) -> tuple[H11Protocol, HTTPStream, list[bytes]]:
    """A protocol and stream of these classes that have read `request`, as Hypercorn
    serves it, with no app; and the list every byte they write is appended to."""
    sent: list[bytes] = []

    async def send(event: Any) -> None:
        if isinstance(event, RawData):
            sent.append(bytes(event.data))

    proto = protocol_class(
        None, Config(), WorkerContext(None), TaskGroup(), ConnectionState({}),  # type: ignore[arg-type]
        False, None, None, send,
    )
    proto.connection.receive_data(request)
    got = proto.connection.next_event()
    assert isinstance(got, h11.Request)
    proto.connection.next_event()
    stream = stream_class(None, Config(), WorkerContext(None), TaskGroup(), False,  # type: ignore[arg-type]
                          None, None, proto.stream_send, 1)
    stream.scope = {"method": got.method.decode(), "http_version": got.http_version.decode()}  # type: ignore[typeddict-item]
    stream.start_time = 0.0
    stream.app_put = None  # type: ignore[assignment]  # no app: nothing to tell it
    proto.stream = stream
    return proto, stream, sent


async def _written(protocol_class: type[H11Protocol], stream_class: type[HTTPStream],
                   request: bytes, messages: list[dict[str, Any]]) -> list[bytes]:
    """What a protocol and stream class write for one request and the app's messages."""
    _, stream, sent = served_stream(protocol_class, stream_class, request)
    for message in messages:
        await stream.app_send(message)  # type: ignore[arg-type]
    return sent


POST11 = b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n"
SSE_START = {"type": "http.response.start", "status": 200,
             "headers": [(b"content-type", b"text/event-stream")], HEAD_WITH_BODY: True}


def _parts(pieces: list[bytes]) -> list[dict[str, Any]]:
    *more, last = pieces
    return [*({"type": "http.response.body", "body": p, "more_body": True} for p in more),
            {"type": "http.response.body", "body": last, "more_body": False}]


@pytest.mark.parametrize(
    ("request_bytes", "start", "pieces"),
    [
        (POST11, SSE_START, [b"data: 1\n\n", b"", b"data: 2\n\n" * 40, b"data: [DONE]\n\n"]),
        (POST11, SSE_START, [b"data: only\n\n"]),
        (POST11, SSE_START, [b"data: 1\n\n", b""]),  # an empty last part
        (POST11, {**SSE_START, HEAD_WITH_BODY: False}, [b"a", b"b"]),  # a head sent at once
        (b"POST /x HTTP/1.0\r\ncontent-length: 0\r\n\r\n", SSE_START, [b"a", b"b"]),  # not chunked
        (b"HEAD /x HTTP/1.1\r\nhost: a\r\n\r\n", SSE_START, [b"a", b"b"]),  # no body at all
        (POST11, {"type": "http.response.start", "status": 200,
                  "headers": [(b"content-length", b"2")]}, [b"a", b"b"]),  # a sized body
    ],
)
async def test_our_framing_writes_the_bytes_hypercorn_and_h11_write(
    request_bytes: bytes, start: dict[str, Any], pieces: list[bytes]
) -> None:
    messages = [start, *_parts(pieces)]
    theirs = await _written(H11Protocol, HTTPStream, request_bytes, messages)
    ours = await _written(CoalescingH11Protocol, FramingHTTPStream, request_bytes, messages)
    # The two runs may straddle a second: the `date` header is the one byte string allowed to differ.
    assert _undated(b"".join(ours)) == _undated(b"".join(theirs))
    assert all(ours)  # no empty sends


def _undated(written: bytes) -> bytes:
    return re.sub(rb"\r\ndate: [^\r]*\r\n", b"\r\ndate: -\r\n", written, count=1)


async def test_every_part_is_written_when_sent_and_the_last_goes_with_the_terminator() -> None:
    pieces = [b"data: open\n\n", b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"]
    ours = await _written(CoalescingH11Protocol, FramingHTTPStream, POST11, [SSE_START, *_parts(pieces)])
    assert ours[0].startswith(b"HTTP/1.1 200") and ours[0].endswith(b"c\r\ndata: open\n\n\r\n")
    assert ours[1:] == [b"9\r\ndata: 1\n\n\r\n", b"9\r\ndata: 2\n\n\r\n", b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"]


@pytest.mark.parametrize(
    ("request_bytes", "start"),
    [
        (POST11, SSE_START),
        (POST11, {**SSE_START, HEAD_WITH_BODY: False}),  # a head sent at once
        (b"POST /x HTTP/1.0\r\ncontent-length: 0\r\n\r\n", SSE_START),  # not chunked: app_send's way
        (b"HEAD /x HTTP/1.1\r\nhost: a\r\n\r\n", SSE_START),  # no body at all
    ],
)
async def test_a_part_sent_without_its_message_writes_what_app_send_writes(
    request_bytes: bytes, start: dict[str, Any]
) -> None:
    pieces = [b"data: 1\n\n", b"", b"data: 2\n\n" * 40, b"data: [DONE]\n\n"]
    messages = [start, *_parts(pieces)]
    theirs = await _written(CoalescingH11Protocol, FramingHTTPStream, request_bytes, messages)
    _, stream, ours = served_stream(CoalescingH11Protocol, FramingHTTPStream, request_bytes)
    part = body_part_sender(stream.app_send)
    assert part is not None
    await stream.app_send(start)  # type: ignore[arg-type]
    for piece in pieces[:-1]:
        await part(piece)
    await stream.app_send(messages[-1])  # type: ignore[arg-type]
    assert _undated(b"".join(ours)) == _undated(b"".join(theirs))
    assert len(ours) == len(theirs) and all(ours)


async def test_a_send_that_is_not_the_streams_own_gets_no_part_sender() -> None:
    _, stream, _ = served_stream(CoalescingH11Protocol, FramingHTTPStream, POST11)

    async def wrapped(message: Any) -> None:  # a middleware's send
        await stream.app_send(message)

    assert body_part_sender(stream.app_send) is not None
    assert body_part_sender(wrapped) is None
    _, theirs, _ = served_stream(H11Protocol, HTTPStream, POST11)
    assert body_part_sender(theirs.app_send) is None  # Hypercorn's own stream: no send_part


async def test_a_part_on_a_direct_connection_is_written_without_a_connection_event() -> None:
    server, peer, told = _connection()
    events: list[object] = []
    real = server.protocol_send

    async def counted(event: Any) -> None:
        events.append(event)
        await real(event)

    proto = CoalescingH11Protocol(
        None, Config(), WorkerContext(None), TaskGroup(), ConnectionState({}),  # type: ignore[arg-type]
        False, None, None, server.protocol_send,
    )
    await proto.write_part(b"data: 1\n\n")
    assert await peer.receive_some(100) == b"9\r\ndata: 1\n\n\r\n"
    assert events == []  # straight to `write_now`: no RawData through protocol_send
    proto.send = counted  # type: ignore[method-assign]  # any other connection: its protocol_send
    proto._looked = False
    await proto.write_part(b"data: 2\n\n")
    assert await peer.receive_some(100) == b"9\r\ndata: 2\n\n\r\n"
    assert [type(e) for e in events] == [RawData] and told.events == []


async def test_a_stream_ends_in_one_send_with_its_terminator_and_the_connection_lives(
    gateway: Running, sends: list[tuple[int, bytes]]
) -> None:
    async with gateway.client() as client:
        for _ in range(2):  # the second on the same kept-alive connection
            async with client.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as s:
                streamed = b"".join([part async for part in s.aiter_bytes()])
            assert streamed.rstrip().endswith(b"data: [DONE]")
            out = _answer_sends(sends)
            assert out[-1].endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    heads = {sid for sid, data in sends if data.startswith(b"HTTP/1.1 ")}
    assert len(heads) == 1  # one connection served both
