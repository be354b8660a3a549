"""A response head written by us (server/response_head.py, hypercorn_patch rule 5) is the
bytes Hypercorn and h11 write, and leaves h11's connection where h11's own send leaves it.

Generated requests (method, HTTP version, `connection` header) and app start messages
(status, headers both well formed and odd, sized or not) go through Hypercorn's own
protocol and stream classes and through ours; what is written (or the error raised) must
match byte for byte, the `date` header aside, and so must h11's states after the body.
A head of the gateway's kind (sized, or a stream's) must not pass through
`h11.Connection.send`.
"""

from __future__ import annotations

import re
from typing import Any

import h11
import pytest
import trio
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import HTTPStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.hypercorn_patch import HEAD_WITH_BODY, CoalescingH11Protocol, FramingHTTPStream
from server.response_head import CheckedNames, direct_head
from tests.server.conftest import Running
from tests.server.test_hypercorn_patch import served_stream

_GATEWAY_HEADERS = [
    (b"content-type", b"application/json"),
    (b"x-request-id", b"req_0123456789abcdef"),
    (b"x-umg-provider", b"mock"),
    (b"x-ratelimit-remaining-requests", b"59"),
    (b"cache-control", b"no-store"),
]

names = st.one_of(
    st.sampled_from([b"content-type", b"x-request-id", b"server", b"vary", b"set-cookie", b"x-a"]),
    st.sampled_from([b"Content-Type", b"X-Odd", b"connection", b"transfer-encoding", b"host",
                     b"upgrade", b"content-length", b"bad name", b"", b"x:y"]),
    st.binary(min_size=1, max_size=8),
)
values = st.one_of(
    st.sampled_from([b"application/json", b"close", b"chunked", b"keep-alive", b"12", b"a b",
                     b"a\tb", b"", b"1, 1", b"007"]),
    st.binary(max_size=12),
)
header_lists = st.lists(st.tuples(names, values), max_size=6)
statuses = st.sampled_from([200, 201, 202, 204, 304, 400, 404, 429, 500, 503, 599, 999])
requests = st.sampled_from([
    b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n",
    b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n",
    b"HEAD /x HTTP/1.1\r\nhost: a\r\n\r\n",
    b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    b"GET /x HTTP/1.0\r\n\r\n",
    b"GET /x HTTP/1.0\r\nconnection: keep-alive\r\n\r\n",
])


async def _write(protocol_class: type[H11Protocol], stream_class: type[HTTPStream], request: bytes,
                 start: dict[str, Any], body: bytes | list[bytes]) -> tuple[object, ...]:
    """What one protocol and stream class write for a request and the app's start and
    body, with h11's states after; or the error's type where one is raised."""
    proto, stream, sent = served_stream(protocol_class, stream_class, request)
    try:
        await stream.app_send(start)  # type: ignore[arg-type]
        *more, last = [body] if isinstance(body, bytes) else body
        for part in more:
            await stream.app_send({"type": "http.response.body", "body": part, "more_body": True})
        await stream.app_send({"type": "http.response.body", "body": last, "more_body": False})
    except Exception as error:  # noqa: BLE001  (compared with the other run's, below)
        conn = proto.connection
        assert isinstance(conn, h11.Connection)
        return ("raised", type(error).__name__, conn.our_state, conn.their_state)
    conn = proto.connection
    assert isinstance(conn, h11.Connection)
    written = re.sub(rb"\r\ndate: [^\r]*\r\n", b"\r\ndate: -\r\n", b"".join(sent), count=1)
    return ("wrote", written, conn.our_state, conn.their_state)


def _both(request: bytes, start: dict[str, Any], body: bytes | list[bytes]
          ) -> tuple[tuple[object, ...], tuple[object, ...]]:
    async def run() -> tuple[tuple[object, ...], tuple[object, ...]]:
        theirs = await _write(H11Protocol, HTTPStream, request, start, body)
        ours = await _write(CoalescingH11Protocol, FramingHTTPStream, request, start, body)
        return theirs, ours

    return trio.run(run)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests, status=statuses, headers=header_lists, sized=st.booleans(),
       vouched=st.booleans(),
       body=st.lists(st.sampled_from([b"", b"{}", b'{"id":"x"}', b"data: 1\n\n"]), min_size=1, max_size=3))
def test_our_head_is_the_bytes_hypercorn_and_h11_write(
    request: bytes, status: int, headers: list[tuple[bytes, bytes]], sized: bool, vouched: bool,
    body: list[bytes],
) -> None:
    if sized:
        headers = [*headers, (b"content-length", str(len(b"".join(body))).encode())]
    start = {"type": "http.response.start", "status": status, "headers": headers, HEAD_WITH_BODY: vouched}
    theirs, ours = _both(request, start, body)
    assert ours == theirs


@settings(max_examples=100, deadline=None)
@given(request=requests, status=statuses, extra=st.lists(st.tuples(
    st.sampled_from([b"x-a", b"vary", b"set-cookie"]), st.sampled_from([b"1", b"a b", b"*"])), max_size=3))
def test_the_gateways_own_heads_match(
    request: bytes, status: int, extra: list[tuple[bytes, bytes]]
) -> None:
    body = b'{"id":"chatcmpl-1","object":"chat.completion"}'
    headers = [*_GATEWAY_HEADERS, *extra, (b"content-length", str(len(body)).encode())]
    start = {"type": "http.response.start", "status": status, "headers": headers}
    theirs, ours = _both(request, start, body)
    assert ours == theirs
    assert ours[0] == "wrote"


def _connection(request: bytes = b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n") -> h11.Connection:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(request)
    assert isinstance(conn.next_event(), h11.Request)
    conn.next_event()
    return conn


def test_a_sized_head_of_ours_is_written_without_h11s_send(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real = h11.Connection.send

    def recording(self: h11.Connection, event: Any) -> Any:
        seen.append(type(event).__name__)
        return real(self, event)

    monkeypatch.setattr(h11.Connection, "send", recording)
    body = b'{"ok":true}'
    start = {"type": "http.response.start", "status": 200,
             "headers": [*_GATEWAY_HEADERS, (b"content-length", str(len(body)).encode())]}

    async def run() -> tuple[object, ...]:
        return await _write(CoalescingH11Protocol, FramingHTTPStream,
                            b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n", start, body)

    got = trio.run(run)
    assert got[0] == "wrote" and isinstance(got[1], bytes) and got[1].endswith(b"\r\n\r\n" + body)
    assert "Response" not in seen  # the head did not go through h11
    assert got[2] is h11.IDLE  # h11 ended the message and the connection is ready for the next


def test_a_head_without_a_length_is_chunked_as_h11_chunks_it() -> None:
    conn = _connection()
    data = direct_head(conn, 200, [(b"content-type", b"text/event-stream")])
    assert data == b"HTTP/1.1 200 \r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert conn.send(h11.Data(data=b"abc")) == b"3\r\nabc\r\n"
    assert conn.send(h11.EndOfMessage()) == b"0\r\n\r\n"


def test_the_body_length_is_h11s_to_enforce_after_our_head() -> None:
    conn = _connection()
    data = direct_head(conn, 200, [(b"content-length", b"2")])
    assert data == b"HTTP/1.1 200 \r\ncontent-length: 2\r\n\r\n"
    assert conn.our_state is h11.SEND_BODY
    with pytest.raises(h11.LocalProtocolError):
        conn.send(h11.Data(data=b"abc"))  # more than the head said


@pytest.mark.parametrize(
    ("request_bytes", "status", "headers"),
    [
        (b"HEAD /x HTTP/1.1\r\nhost: a\r\n\r\n", 200, [(b"content-length", b"2")]),
        (b"GET /x HTTP/1.0\r\n\r\n", 200, [(b"content-length", b"2")]),
        (b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n", 200, [(b"content-length", b"2")]),
        (b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n", 204, [(b"content-length", b"0")]),
        (b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n", 200, [(b"transfer-encoding", b"chunked")]),
        (b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n", 200, [(b"Content-Length", b"2")]),
        (b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n", 200, [(b"content-length", b"2"), (b"x", b"a\r\nb")]),
    ],
)
def test_unusual_heads_are_left_to_h11(request_bytes: bytes, status: int,
                                       headers: list[tuple[bytes, bytes]]) -> None:
    conn = _connection(request_bytes)
    assert direct_head(conn, status, headers) is None
    assert conn.our_state is h11.SEND_RESPONSE  # untouched


async def test_the_served_gateways_json_answers_take_our_head(
    gateway: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    heads: list[int] = []
    real = h11.Connection.send

    def recording(self: h11.Connection, event: Any) -> Any:
        if type(event) is h11.Response:
            heads.append(event.status_code)
        return real(self, event)

    monkeypatch.setattr(h11.Connection, "send", recording)
    body = {"model": "mock-fast", "messages": [{"role": "user", "content": "hello"}]}
    async with gateway.client() as client:
        ok = await client.post("/v1/chat/completions", json=body)
        refused = await client.post("/v1/chat/completions", json={"model": "no-such-model", "messages": []})
        again = await client.post("/v1/chat/completions", json=body)  # the same kept-alive connection
        async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
            streamed = b"".join([part async for part in s.aiter_bytes()])
    assert ok.status_code == 200 and again.status_code == 200 and refused.status_code >= 400
    assert ok.json()["object"] == "chat.completion"
    assert streamed.rstrip().endswith(b"data: [DONE]")
    assert heads == []  # none of the four heads (a stream's among them) went through h11


def test_names_checked_once_per_connection_give_the_same_heads() -> None:
    checked = CheckedNames()
    heads = [[(b"content-type", b"application/json"), (b"content-length", b"2")],
             [(b"content-type", b"application/json"), (b"content-length", b"3")],  # same names: not checked again
             [(b"Content-Type", b"x"), (b"content-length", b"2")],  # a name of another head: checked, refused
             [(b"content-type", b"bad\x00"), (b"content-length", b"2")]]  # known names, a value refused
    for headers in heads:
        assert direct_head(_connection(), 200, headers, checked) == direct_head(_connection(), 200, headers)
    assert checked.names == b"content-type\ncontent-length"
