"""A plain request read by us (server/request_head.py, hypercorn_patch rule 6) is what h11
reads, and everything else is still h11's.

Generated requests, well formed and odd (request lines, header names, separators,
values, line ends, folded lines, framing headers, bodies short, long and followed by more
bytes): whatever `plain_request` takes, h11 takes too and reads the same method, target,
headers and body, with nothing left over; through Hypercorn's protocol class and ours the
app is given the same scope and body, the same bytes are written (h11's 4xx for what it
refuses) and h11's states end the same. On a served gateway, malformed requests get a 4xx
(h11's 501 for a transfer coding it does not know; or the connection closed), the server lives on, and a sized answer to a plain request
leaves in one write without h11's body sends (rule 7).
"""

from __future__ import annotations

import re
from typing import Any

import h11
import pytest
import trio
import trio.testing
from hypercorn.config import Config
from hypercorn.events import Closed, RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import server.hypercorn_patch as patch
from server.hypercorn_patch import CoalescingH11Protocol, FramingHTTPStream
from server.request_head import plain_request
from tests.server.conftest import Running

LIMIT = 16 * 1024

methods = st.sampled_from([b"POST", b"GET", b"HEAD", b"get", b"CONNECT", b"PRI", b"OPTIONS", b"BAD METHOD",
                           b"", b"P\x00ST"])
targets = st.sampled_from([b"/v1/chat/completions", b"/x?a=1&b=%20", b"*", b"/a b", b"", b"/\x7f",
                           b"http://h/x", b"/\xe9"])
versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 "])
names = st.one_of(
    st.sampled_from([b"host", b"Host", b"content-type", b"authorization", b"x-request-id",
                     b"Content-Length", b"content-length", b"connection", b"upgrade", b"expect",
                     b"transfer-encoding", b"te", b"x:y", b"bad name", b"", b"x\x00"]),
    st.binary(min_size=1, max_size=6),
)
values = st.one_of(
    st.sampled_from([b"application/json", b"Bearer sk-1", b"a b", b"a\tb", b"", b" padded ", b"\tx\t",
                     b"close", b"keep-alive", b"chunked", b"100-continue", b"websocket", b"h2c",
                     b"\xe9t\xe9", b"x\x00y", b"x\x0by", b"x\ry"]),
    st.binary(max_size=8),
)
separators = st.sampled_from([b": ", b":", b":  \t", b" : ", b"::"])
line_ends = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r\r\n"])
lengths = st.sampled_from([None, b"0", b"5", b"05", b"5, 5", b"-1", b"", b"1" * 21, b" 5", b"5 "])


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    end = draw(line_ends)
    line = draw(methods) + b" " + draw(targets) + b" " + draw(versions)
    fields = draw(st.lists(st.tuples(names, separators, values, line_ends), max_size=5))
    if draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), (b"host", b": ", b"127.0.0.1:8080", b"\r\n"))
    length = draw(lengths)
    if length is not None:
        fields.insert(draw(st.integers(0, len(fields))), (b"content-length", b": ", length, b"\r\n"))
    head = line + end + b"".join(n + s + v + e for n, s, v, e in fields)
    if draw(st.booleans()) and fields:  # an obsolete folded line
        head += b" folded" + end
    head += end
    body = draw(st.sampled_from([b"", b"hello", b"hell", b"hello!", b'{"a": 1}']))
    after = draw(st.sampled_from([b"", b"", b"GET / HTTP/1.1\r\nhost: a\r\n\r\n", b"x"]))
    return head + body + after


def _h11_reads(data: bytes) -> tuple[h11.Request, bytes, h11.Connection]:
    """h11's reading of one whole request in `data`: it must take all of it."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    request = conn.next_event()
    assert isinstance(request, h11.Request)
    body = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            body += bytes(event.data)
        else:
            break
    assert isinstance(event, h11.EndOfMessage)
    assert conn.next_event() is h11.NEED_DATA and conn.trailing_data == (b"", False)
    return request, body, conn


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_requests())
def test_what_we_read_h11_reads_the_same(data: bytes) -> None:
    ours = plain_request(data, LIMIT)
    if ours is None:
        return
    request, body, _ = _h11_reads(data)
    assert (ours.method, ours.target, ours.headers, ours.body) == (
        request.method, request.target, list(request.headers), body)
    assert request.http_version == b"1.1"


def test_the_gateways_requests_are_read_by_us() -> None:
    body = b'{"model": "m", "messages": []}'
    data = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n"
            b"content-type: application/json\r\nAuthorization:  Bearer sk-x \r\n"
            b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
    ours = plain_request(data, LIMIT)
    assert ours is not None and ours.body == body and ours.length == b"%d" % len(body)
    assert (b"authorization", b"Bearer sk-x") in ours.headers
    assert plain_request(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n", LIMIT) is not None


@pytest.mark.parametrize("data", [
    b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhell",  # the body is not all here
    b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello" + b"GET / HTTP/1.1\r\n",  # more
    b"POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    b"GET /x HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\n\r\n",
    b"GET /x HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\n\r\n",
    b"GET /x HTTP/1.0\r\nhost: a\r\n\r\n",
    b"GET /x HTTP/1.1\r\n\r\n",  # no host: h11's 400
    b"GET /x HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
    b"GET /x HTTP/1.1\nhost: a\n\n",
    b"GET /x HTTP/1.1\r\nhost: a\r\nx: 1\r\n y\r\n\r\n",
    b"\r\nGET /x HTTP/1.1\r\nhost: a\r\n\r\n",
    b"CONNECT a:1 HTTP/1.1\r\nhost: a:1\r\n\r\n",
])
def test_anything_unusual_is_left_to_h11(data: bytes) -> None:
    assert plain_request(data, LIMIT) is None


def test_a_head_longer_than_the_limit_is_left_to_h11() -> None:
    data = b"GET /x HTTP/1.1\r\nhost: a\r\nx: " + b"y" * 100 + b"\r\n\r\n"
    assert plain_request(data, len(data)) is not None
    assert plain_request(data, len(data) - 1) is None


class _Apps:
    """Hypercorn's per-connection task group, as far as a stream uses it: the scope each
    app would get, and the messages put to it."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []

    async def spawn_app(self, app: Any, config: Any, scope: Any, send: Any) -> Any:
        self.scopes.append(dict(scope))

        async def put(message: dict[str, Any]) -> None:
            self.messages.append(message)

        return put


async def _serve(protocol_class: type[H11Protocol], stream_class: type[HTTPStream],
                 data: bytes) -> tuple[object, ...]:
    """What a protocol class does with `data` read from a connection, with `stream_class`
    as Hypercorn's HTTP stream: the scopes and body given to the app, what it writes,
    whether it closed, h11's states; or the error's type where one is raised."""
    written: list[bytes] = []
    closed: list[bool] = []

    async def send(event: Any) -> None:
        if isinstance(event, RawData):
            written.append(bytes(event.data))
        elif isinstance(event, Closed):
            closed.append(True)

    apps = _Apps()
    proto = protocol_class(None, Config(), WorkerContext(None), apps,  # type: ignore[arg-type]
                           ConnectionState({}), False, None, None, send)
    saved = patch.hypercorn_h11.HTTPStream  # type: ignore[attr-defined]
    patch.hypercorn_h11.HTTPStream = stream_class  # type: ignore[attr-defined]
    failed: list[str] = []
    done: list[bool] = []

    async def handle() -> None:
        try:
            await proto.handle(RawData(data))
        except Exception as error:  # noqa: BLE001  (compared with the other class's, below)
            failed.append(type(error).__name__)
        done.append(True)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handle)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()  # still waiting: paused (pipelined bytes), read no further
    finally:
        patch.hypercorn_h11.HTTPStream = saved  # type: ignore[attr-defined]
    if failed:
        return ("raised", failed[0])
    for scope in apps.scopes:
        scope.pop("state")
    body = b"".join(m.get("body", b"") for m in apps.messages)
    ended = [m.get("more_body", False) for m in apps.messages][-1:]
    conn = proto.connection
    states = (conn.our_state, conn.their_state) if isinstance(conn, h11.Connection) else None
    out = re.sub(rb"\r\ndate: [^\r]*\r\n", b"\r\ndate: -\r\n", b"".join(written))
    return ("served", apps.scopes, body, ended, out, bool(closed), states, bool(done))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_requests())
def test_our_protocol_gives_the_app_and_the_client_what_hypercorns_gives(data: bytes) -> None:
    theirs = trio.run(_serve, H11Protocol, HTTPStream, data)
    ours = trio.run(_serve, CoalescingH11Protocol, FramingHTTPStream, data)
    assert ours == theirs


async def test_a_plain_request_does_not_go_through_h11s_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    def unread(self: h11.Connection) -> None:
        raise AssertionError("h11 read a plain request")

    monkeypatch.setattr(h11.Connection, "next_event", unread)
    got = await _serve(CoalescingH11Protocol, FramingHTTPStream,
                       b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\nhi")
    assert got[0] == "served" and got[2] == b"hi" and got[3] == [False]
    assert got[6] == (h11.SEND_RESPONSE, h11.DONE)


_MALFORMED = [
    b"GET /x HTTP/1.1\r\n\r\n",
    b"GET /x HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
    b"GET /x HTTP/1.1\r\nhost: a\r\nbad name: 1\r\n\r\n",
    b"GET /x HTTP/1.1\r\nhost: a\r\nx: a\x00b\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nhost: a\r\n\r\n",
    b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: -1\r\n\r\n",
    b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 1, 2\r\n\r\n",
    b"POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip\r\n\r\n",
    b"POST /x HTTP/1.1\r\nhost: a\r\n x: folded first\r\n\r\n",
    b"G\x00T /x HTTP/1.1\r\nhost: a\r\n\r\n",
    b"GET /x HTTP/9.9\r\nhost: a\r\n\r\n",
]


async def _exchange(url: str, data: bytes) -> bytes:
    """What the server writes back for `data` until it closes or 2 s pass."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    got = b""
    async with stream:
        await stream.send_all(data)
        with trio.move_on_after(2):
            while chunk := await stream.receive_some(65536):
                got += chunk
                if b"\r\n\r\n" in got and b"content-length: 0" in got.lower():
                    break
    return got


@pytest.mark.parametrize("data", _MALFORMED)
async def test_a_malformed_request_gets_a_4xx_and_the_server_lives_on(gateway: Running, data: bytes) -> None:
    got = await _exchange(gateway.url, data)
    assert got == b"" or re.match(rb"HTTP/1\.1 (4\d\d|501) ", got), got[:200]
    ok = await _exchange(gateway.url, b"GET /healthz HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 "), ok[:200]


async def test_a_sized_answer_to_a_plain_request_skips_h11s_body_sends(
    gateway: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends: list[type] = []
    real = h11.Connection.send

    def counted(self: h11.Connection, event: Any) -> bytes | None:
        if self.our_role is h11.SERVER:  # (the test's client speaks h11 too)
            sends.append(type(event))
        return real(self, event)

    monkeypatch.setattr(h11.Connection, "send", counted)
    async with gateway.client() as client:
        for _ in range(3):  # one kept-alive connection, request after request
            got = await client.post("/v1/chat/completions",
                                    json={"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}]})
            assert got.status_code == 200 and got.json()["object"] == "chat.completion"
    assert sends == []
