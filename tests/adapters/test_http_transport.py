"""The h11 + trio transport (adapters/providers/transport.py over http11.py) against real
local servers: the fake provider (keep-alive, faults, TLS) and tiny raw servers for
body framings. Pool reuse and bound, stale connections, cancellation, timeouts, cuts,
TLS verification, that no failure message carries the key or an auth header, and that a
loopback connect already made in `connect` does not wait on the scheduler."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path

import h11
import pytest
import trio

from adapters.providers import tcp_connect
from adapters.providers.base import ProviderError, Timeouts
from adapters.providers.http11 import PoolLimits
from adapters.providers.transport import H11Transport, HttpResponse
from core.model import FailureKind
from tests.fakes import FakeProvider, Fault, running_fake_provider
from tests.fakes.tls import TlsFiles, make_test_tls

KEY = "sk-test-TRANSPORTSECRET0123456789"
AUTH = {"authorization": f"Bearer {KEY}"}
FAST = Timeouts(connect=2, first_byte=2, idle=2, total=10)
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}
STREAM = {**CHAT, "stream": True}


def chat_url(fake: FakeProvider) -> str:
    return fake.openai_base_url + "/chat/completions"


@asynccontextmanager
async def serving(
    limits: PoolLimits | None = None,
) -> AsyncIterator[tuple[FakeProvider, H11Transport]]:
    transport = H11Transport(limits=limits)
    async with running_fake_provider() as fake:
        try:
            yield fake, transport
        finally:
            await transport.aclose()


async def post(transport: H11Transport, url: str, timeouts: Timeouts = FAST) -> HttpResponse:
    return await transport.post_json(url, AUTH, CHAT, timeouts=timeouts)


async def stream_body(transport: H11Transport, url: str, timeouts: Timeouts = FAST) -> bytes:
    async with transport.stream_post(url, AUTH, STREAM, timeouts=timeouts) as response:
        assert response.status == 200
        return b"".join([chunk async for chunk in response.chunks])


async def failure(call: Callable[[], Awaitable[object]]) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await call()
    return info.value


def assert_no_secret(err: ProviderError) -> None:
    for text in (err.message, str(err), repr(err)):
        assert KEY not in text and KEY[-12:] not in text and "Bearer" not in text


# ---- keep-alive and the pool -------------------------------------------------------------


async def test_one_connection_serves_whole_and_streamed_answers_in_turn() -> None:
    async with serving() as (fake, transport):
        for _ in range(3):
            answer = await post(transport, chat_url(fake))
            assert answer.status == 200 and b"Echo: hello there" in answer.body
            assert answer.headers["content-type"] == "application/json"
            body = await stream_body(transport, chat_url(fake))
            assert body.rstrip().endswith(b"data: [DONE]")
        assert fake.connections_opened == 1 and len(fake.requests) == 6
        sent = fake.requests[0]
        assert sent.headers["authorization"] == f"Bearer {KEY}"
        assert sent.headers["host"] == fake.base_url.removeprefix("http://")
        assert sent.headers["content-type"] == "application/json"
        assert sent.json() == CHAT
        assert fake.requests[1].headers["accept"] == "text/event-stream"


async def test_chunks_arrive_one_by_one_as_the_server_sends_them() -> None:
    async with serving() as (fake, transport):
        fake.script(Fault(chunk_delay=0.05))
        seen: list[float] = []
        async with transport.stream_post(chat_url(fake), AUTH, STREAM, timeouts=FAST) as r:
            async for chunk in r.chunks:
                assert chunk.startswith(b"data: ")
                seen.append(trio.current_time())
        assert len(seen) >= 5
        gaps = [b - a for a, b in zip(seen, seen[1:], strict=False)]
        assert min(gaps) >= 0.04  # each event was handed over as it came, not batched


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async with serving() as (fake, transport):
        fake.script(Fault(close_after=True))
        assert (await post(transport, chat_url(fake))).status == 200
        await fake.wait_for(lambda f: f.connections_open == 0)
        assert (await post(transport, chat_url(fake))).status == 200
        assert fake.connections_opened == 2 and len(fake.requests) == 2


async def test_a_stale_pooled_connection_is_retried_once_on_a_fresh_one() -> None:
    async with serving() as (fake, transport):
        assert (await post(transport, chat_url(fake))).status == 200
        fake.script(Fault(reset=True))  # the reused connection dies before any answer byte
        answer = await post(transport, chat_url(fake))
        assert answer.status == 200
        assert fake.connections_opened == 2 and len(fake.requests) == 3


async def test_a_fresh_connection_that_dies_is_not_retried() -> None:
    async with serving() as (fake, transport):
        fake.script(Fault(reset=True))
        err = await failure(lambda: post(transport, chat_url(fake)))
        assert err.kind is FailureKind.STREAM_CUT and "response headers" in err.message
        assert len(fake.requests) == 1


async def test_the_stale_retry_happens_only_once() -> None:
    async with serving() as (fake, transport):
        assert (await post(transport, chat_url(fake))).status == 200
        fake.script(Fault(reset=True), Fault(reset=True))
        err = await failure(lambda: post(transport, chat_url(fake)))
        assert err.kind is FailureKind.STREAM_CUT
        assert len(fake.requests) == 3 and fake.connections_opened == 2


@pytest.mark.parametrize("leave", ["cancel", "break"])
async def test_leaving_a_stream_early_closes_its_connection_and_frees_the_slot(leave: str) -> None:
    async with serving(PoolLimits(max_connections=1)) as (fake, transport):
        fake.script(Fault(stall_after=2))
        got = b""  # the pieces of one read may hold several chunks: count the events
        with trio.move_on_after(0.3 if leave == "cancel" else 5):
            async with transport.stream_post(chat_url(fake), AUTH, STREAM, timeouts=FAST) as r:
                async for chunk in r.chunks:
                    got += chunk
                    if leave == "break" and got.count(b"data: ") == 2:
                        break
        assert got.count(b"data: ") == 2
        await fake.wait_for(lambda f: f.streams_aborted == 1)
        with trio.fail_after(2):  # the one slot is free again, on a new connection
            assert (await post(transport, chat_url(fake))).status == 200
        assert fake.connections_opened == 2


async def test_the_pool_never_opens_more_than_its_bound() -> None:
    async with serving(PoolLimits(max_connections=4)) as (fake, transport):
        fake.script(*[Fault(delay=0.03)] * 40)
        statuses: list[int] = []

        async def one() -> None:
            statuses.append((await post(transport, chat_url(fake))).status)

        async with trio.open_nursery() as nursery:
            for _ in range(40):
                nursery.start_soon(one)
        assert statuses == [200] * 40
        assert fake.peak_connections == 4 and fake.connections_opened == 4


async def test_a_steady_load_of_many_concurrent_requests_reuses_every_connection() -> None:
    # 64 streams held open at once, twice: the second time every one finds a pooled
    # connection (a smaller idle bound would close some at the end of the first round
    # and open them again in the second)
    async with serving() as (fake, transport):
        for _ in range(2):
            async with AsyncExitStack() as stack:
                held = [
                    await stack.enter_async_context(
                        transport.stream_post(chat_url(fake), AUTH, STREAM, timeouts=FAST)
                    )
                    for _ in range(64)
                ]
                for response in held:
                    assert response.status == 200
                    assert b"[DONE]" in b"".join([chunk async for chunk in response.chunks])
        assert fake.connections_opened == 64 and len(fake.requests) == 128


async def test_waiting_for_a_free_connection_is_bounded_by_the_connect_timeout() -> None:
    async with serving(PoolLimits(max_connections=1)) as (fake, transport):
        fake.script(Fault(stall_after=1))
        async with transport.stream_post(chat_url(fake), AUTH, STREAM, timeouts=FAST):
            quick = Timeouts(connect=0.2, first_byte=2, idle=2, total=10)
            with trio.fail_after(60):  # a hang guard: the slot is held for an hour
                err = await failure(lambda: post(transport, chat_url(fake), quick))
        assert err.kind is FailureKind.TIMEOUT and "free connection" in err.message
        assert len(fake.requests) == 1


async def test_idle_connections_expire() -> None:
    limits = PoolLimits(keepalive_expiry=0.1)
    async with serving(limits) as (fake, transport):
        await post(transport, chat_url(fake))
        await trio.sleep(0.2)
        await post(transport, chat_url(fake))
        assert fake.connections_opened == 2
        await fake.wait_for(lambda f: f.connections_open == 1)  # the expired one was closed


# ---- failures ------------------------------------------------------------------------------


async def test_connect_refused_is_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        transport = H11Transport()
        err = await failure(lambda: post(transport, f"http://127.0.0.1:{port}/v1/x"))
        await transport.aclose()
    assert err.kind is FailureKind.CONNECT and "connecting" in err.message
    assert_no_secret(err)


async def test_an_address_is_connected_directly_and_a_name_through_resolution() -> None:
    async with serving() as (fake, transport):
        port = fake.openai_base_url.rsplit(":", 1)[1].split("/", 1)[0]
        for host in ("127.0.0.1", "localhost"):  # two origins: one connection each
            answer = await post(transport, f"http://{host}:{port}/v1/chat/completions")
            assert answer.status == 200 and b"Echo: hello there" in answer.body
        assert fake.connections_opened == 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # bound, never listening
        transport = H11Transport()
        for url in (f"http://127.0.0.1:{closed}/v1/x", f"http://localhost:{closed}/v1/x"):
            err = await failure(partial(post, transport, url))
            assert err.kind is FailureKind.CONNECT and "connecting" in err.message, url
        await transport.aclose()


class Resumed(trio.abc.Instrument):
    """How often `task` was resumed (each resume follows a trip through the scheduler)."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def test_a_loopback_connect_that_is_done_at_once_does_not_wait_on_the_scheduler() -> None:
    with socket.socket() as s:  # listening, never accepting: the kernel finishes the handshake
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        port = s.getsockname()[1]
        resumed = Resumed(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(resumed)
        try:
            stream = await tcp_connect.open_tcp("127.0.0.1", port)
        finally:
            trio.lowlevel.remove_instrument(resumed)
        try:
            assert resumed.steps == 0
            assert stream.socket.getpeername() == ("127.0.0.1", port)
            assert stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)  # as open_tcp_stream's
        finally:
            await stream.aclose()


async def test_connect_timeout_is_connect_error() -> None:
    with socket.socket() as s:  # a listener that never accepts, its backlog filled
        s.bind(("127.0.0.1", 0))
        s.listen(0)
        port = s.getsockname()[1]
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        transport = H11Transport()
        slow = Timeouts(connect=0.3, first_byte=2, idle=2, total=10)
        with trio.fail_after(60):  # a hang guard, below the kernel's own connect timeout
            err = await failure(lambda: post(transport, f"http://127.0.0.1:{port}/v1/x", slow))
        await transport.aclose()
        for filler in fillers:
            filler.close()
    assert err.kind is FailureKind.CONNECT and "timed out" in err.message


async def test_first_byte_timeout_closes_the_connection() -> None:
    async with serving() as (fake, transport):
        fake.script(Fault(delay=5))
        slow = Timeouts(connect=2, first_byte=0.2, idle=2, total=10)
        with trio.fail_after(60):  # a hang guard: an answer after 5 s would be no timeout
            err = await failure(lambda: post(transport, chat_url(fake), slow))
        assert err.kind is FailureKind.TIMEOUT and "response headers" in err.message
        await fake.wait_for(lambda f: f.client_disconnects == 1)
        assert (await post(transport, chat_url(fake))).status == 200
        assert fake.connections_opened == 2


async def test_idle_and_total_deadlines_bound_a_stream() -> None:
    async with serving() as (fake, transport):
        fake.script(Fault(stall_after=2), Fault(chunk_delay=0.1))
        idle = Timeouts(connect=2, first_byte=2, idle=0.2, total=10)
        with trio.fail_after(60):  # hang guards: what ended the stream is checked
            err = await failure(lambda: stream_body(transport, chat_url(fake), idle))
        assert err.kind is FailureKind.TIMEOUT and "next chunk" in err.message
        total = Timeouts(connect=2, first_byte=2, idle=1, total=0.35)
        with trio.fail_after(60):
            err = await failure(lambda: stream_body(transport, chat_url(fake), total))
        assert err.kind is FailureKind.TIMEOUT


async def test_a_stream_cut_mid_body_is_stream_cut() -> None:
    async with serving() as (fake, transport):
        fake.script(Fault(cut_after=3))
        err = await failure(lambda: stream_body(transport, chat_url(fake)))
        assert err.kind is FailureKind.STREAM_CUT and "next chunk" in err.message
        assert (await post(transport, chat_url(fake))).status == 200  # a fresh connection


async def test_error_statuses_come_back_as_answers_with_their_headers() -> None:
    async with serving() as (fake, transport):
        fake.script(Fault(status=429, headers={"retry-after": "3"}), Fault(status=503))
        answer = await post(transport, chat_url(fake))
        assert answer.status == 429 and answer.headers["retry-after"] == "3"
        async with transport.stream_post(chat_url(fake), AUTH, STREAM, timeouts=FAST) as r:
            assert r.status == 503 and b"error" in await r.read()
        assert fake.connections_opened == 1  # both error bodies were read: the connection lives


async def test_no_failure_message_carries_the_key() -> None:
    async with serving(PoolLimits(max_connections=1)) as (fake, transport):
        fake.script(Fault(delay=5))
        slow = Timeouts(connect=0.2, first_byte=0.2, idle=0.2, total=10)
        errors = [await failure(lambda: post(transport, chat_url(fake), slow))]
        fake.script(Fault(cut_after=1))
        errors.append(await failure(lambda: stream_body(transport, chat_url(fake))))
        fake.script(Fault(stall_after=1))
        async with transport.stream_post(chat_url(fake), AUTH, STREAM, timeouts=FAST):
            errors.append(await failure(lambda: post(transport, chat_url(fake), slow)))
        bad = {"authorization": f"Bearer {KEY}\r\nx-injected: 1"}
        rejected = await failure(lambda: transport.post_json(chat_url(fake), bad, CHAT, timeouts=FAST))
        assert rejected.kind is FailureKind.AUTH and "provider key" in rejected.message
        errors.append(rejected)
    assert [e.kind for e in errors[:3]] == [
        FailureKind.TIMEOUT, FailureKind.STREAM_CUT, FailureKind.TIMEOUT]
    for err in errors:
        assert_no_secret(err)
    assert all(b"x-injected" not in r.body for r in fake.requests)


# ---- body framings, over a raw server -----------------------------------------------------


@asynccontextmanager
async def raw_server(answers: list[bytes]) -> AsyncIterator[tuple[str, list[int]]]:
    """Answers each request, on whatever connection, with the next canned bytes; a
    canned answer ending in b"<close>" closes the connection after it. Yields the URL
    and a list that counts connections."""
    connections: list[int] = []

    async def handle(stream: trio.SocketStream) -> None:
        connections.append(1)
        buffer = b""
        async with stream:
            while answers:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                while len(rest) < length:
                    rest += await stream.receive_some(65536)
                buffer = rest[length:]
                answer = answers.pop(0)
                await stream.send_all(answer.removesuffix(b"<close>"))
                if answer.endswith(b"<close>"):
                    return

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        try:
            yield f"http://127.0.0.1:{port}/v1/x", connections
        finally:
            nursery.cancel_scope.cancel()


async def test_chunked_content_length_and_close_delimited_bodies() -> None:
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n"
    sized = b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n{\"b\":2}"
    informational = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
    until_close = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{\"c\":3}<close>"
    after = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]"
    async with raw_server([chunked, sized, informational, until_close, after]) as (url, conns):
        transport = H11Transport()
        bodies = [(await post(transport, url)).body for _ in range(5)]
        await transport.aclose()
    assert bodies == [b'{"a":1}', b'{"b":2}', b"{}", b'{"c":3}', b"[]"]
    assert len(conns) == 2  # one keep-alive connection, then a new one after the close


async def test_chunked_bodies_with_extensions_trailers_and_extra_bytes() -> None:
    ext = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nx-t: 1\r\n\r\n"
    early = b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    # bytes after the body's end: the body is whole, but the connection is not reused
    extra = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\nJUNK"
    old = b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n10"  # HTTP/1.0: not kept alive
    after = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]"
    async with raw_server([ext, early, extra, old, after]) as (url, conns):
        transport = H11Transport()
        bodies = [(await post(transport, url)).body for _ in range(5)]
        await transport.aclose()
    assert bodies == [b"abc", b"ok", b"z", b"10", b"[]"]
    assert len(conns) == 3  # one for the first three, a new one after JUNK, one after 1.0


async def test_broken_chunked_framing_is_stream_cut() -> None:
    bad = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n"
    cut = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n<close>"
    async with raw_server([bad, cut]) as (url, _):
        transport = H11Transport()
        broken = await failure(lambda: post(transport, url))
        ended = await failure(lambda: post(transport, url))
        await transport.aclose()
    assert broken.kind is FailureKind.STREAM_CUT and "broke HTTP/1.1" in broken.message
    assert ended.kind is FailureKind.STREAM_CUT and "chunked body ended" in ended.message


async def test_a_short_content_length_body_is_stream_cut() -> None:
    short = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial\"<close>"
    async with raw_server([short]) as (url, _):
        transport = H11Transport()
        err = await failure(lambda: post(transport, url))
        await transport.aclose()
    assert err.kind is FailureKind.STREAM_CUT and "reading the response" in err.message


async def test_garbage_instead_of_http_is_stream_cut() -> None:
    async with raw_server([b"SSH-2.0-OpenSSH\r\n\r\n<close>"]) as (url, _):
        transport = H11Transport()
        err = await failure(lambda: post(transport, url))
        await transport.aclose()
    assert err.kind is FailureKind.STREAM_CUT and "response headers" in err.message


def h11_refusal(raw: bytes) -> str:
    """What h11 says of a response head it refuses (the pooled client passes it on)."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=b"POST", target=b"/x", headers=[(b"host", b"h"), (b"content-length", b"0")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    with pytest.raises(h11.RemoteProtocolError) as info:
        conn.next_event()
    return str(info.value)


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
    b"HTTP/1.1 2x0 OK\r\n\r\n",
])
async def test_a_malformed_response_head_fails_as_h11_refuses_it(raw: bytes) -> None:
    async with raw_server([raw + b"<close>"]) as (url, _):
        transport = H11Transport()
        err = await failure(lambda: post(transport, url))
        await transport.aclose()
    assert err.kind is FailureKind.STREAM_CUT
    assert f"waiting for the response headers: the server broke HTTP/1.1 ({h11_refusal(raw)})" in err.message


async def test_a_connection_is_reused_only_when_neither_side_asked_to_close() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nX-Up: a\r\ncontent-length: 2\r\n\r\n{}",  # plain: kept
        b"HTTP/1.1 200 OK\nX-Up: b\ncontent-length: 2\n\n{}",  # bare line feeds (h11): kept
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\ncontent-length: 2\r\n\r\n{}",  # closed
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}",  # HTTP/1.0 (h11): closed
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",  # our side asks to close (h11)
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]",
    ]
    async with raw_server(answers) as (url, conns):
        transport = H11Transport()
        seen = [len(conns)]
        first = await post(transport, url)
        second = await post(transport, url)
        seen.append(len(conns))
        await post(transport, url)
        await post(transport, url)
        seen.append(len(conns))
        closing = await transport.post_json(url, {**AUTH, "Connection": "close"}, CHAT, timeouts=FAST)
        last = await post(transport, url)
        seen.append(len(conns))
        await transport.aclose()
    assert first.headers["x-up"] == "a" and second.headers["x-up"] == "b"
    assert closing.status == 200 and last.body == b"[]"
    # one connection for the first two; the third's close and the HTTP/1.0 answer each
    # end theirs; the request that asked to close ends its own
    assert seen == [0, 1, 2, 4]


# ---- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    folder: Path = tmp_path_factory.mktemp("tls")
    return make_test_tls(folder)


async def test_https_upstream_with_a_trusted_certificate(tls: TlsFiles) -> None:
    transport = H11Transport(ssl_context=tls.client_context())
    async with running_fake_provider(ssl_context=tls.server_context()) as fake:
        assert fake.base_url.startswith("https://")
        assert (await post(transport, chat_url(fake))).status == 200
        assert (await stream_body(transport, chat_url(fake))).rstrip().endswith(b"[DONE]")
        assert fake.connections_opened == 1
        await transport.aclose()


async def test_https_upstream_with_an_untrusted_certificate_is_refused(tls: TlsFiles) -> None:
    transport = H11Transport()  # the default context: the system's CAs only
    async with running_fake_provider(ssl_context=tls.server_context()) as fake:
        err = await failure(lambda: post(transport, chat_url(fake)))
        await transport.aclose()
        assert err.kind is FailureKind.CONNECT and "certificate verify failed" in err.message
        assert fake.requests == []
