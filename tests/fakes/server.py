"""The fake provider's HTTP server: raw trio + h11 on 127.0.0.1, port 0, faults on demand.

Owns: connections, routing, the fault script and the records. Answers come from
`tests.fakes.replies`. The public API is documented in `tests/fakes/__init__.py`.
"""

from __future__ import annotations

import json
import random
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import h11
import trio
from attrs import define, field, frozen

from tests.fakes import replies

_NET_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError)


@frozen
class Fault:
    """One scripted misbehaviour, used by the next request (see the package docstring)."""

    status: int | None = None
    headers: Mapping[str, str] = field(factory=dict)
    message: str = "fake provider error"
    error_type: str | None = None
    error_code: str | None = None
    body: bytes | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    stall_after: int | None = None
    stall_for: float = 3600.0
    cut_after: int | None = None
    malformed_after: int | None = None
    error_event_after: int | None = None
    reset: bool = False
    close_after: bool = False


NO_FAULT = Fault()


@define
class Chaos:
    """Random faults at `rate` (0..1) for requests no scripted fault or outage covers.

    Each faulted request gets one of: a 500; a 429 with `retry-after: 0` or `1`; a reset
    (the connection closed without an answer); a stall (`stall` seconds before the
    headers); and on streams a cut after two chunks or the provider's mid-stream error
    event. Whether a request is faulted is drawn (seeded); which fault it gets goes round
    the menu in turn, one turn for streams and one for the rest, so a short run meets every
    kind whatever order concurrent requests arrive in. `counts` tallies what was injected.
    """

    rate: float
    seed: int = 0
    stall: float = 1.0
    counts: dict[str, int] = field(factory=dict)
    _draw: random.Random = field(init=False)
    _turns: dict[bool, int] = field(init=False, factory=lambda: {False: 0, True: 0})

    def __attrs_post_init__(self) -> None:
        self._draw = random.Random(self.seed)

    def pick(self, stream: bool) -> Fault:
        if self._draw.random() >= self.rate:
            return NO_FAULT
        menu = {
            "500": Fault(status=500),
            "429": Fault(status=429, headers={"retry-after": self._draw.choice(["0", "1"])}),
            "reset": Fault(reset=True),
            "stall": Fault(delay=self.stall),
        }
        if stream:
            menu |= {"cut": Fault(cut_after=2), "error_event": Fault(error_event_after=2)}
        kinds = sorted(menu)
        name = kinds[self._turns[stream] % len(kinds)]
        self._turns[stream] += 1
        self.counts[name] = self.counts.get(name, 0) + 1
        return menu[name]


@frozen
class RecordedRequest:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Gone(Exception):
    """The client closed the connection (or we cut it on purpose)."""


@define
class _Conn:
    stream: trio.abc.Stream
    h11: h11.Connection = field(factory=lambda: h11.Connection(h11.SERVER))

    async def send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            await self.stream.send_all(data)

    async def wait(self, seconds: float) -> None:
        """Sleep `seconds`, raising _Gone at once if the client closes meanwhile."""
        with trio.move_on_after(seconds):
            while True:
                try:
                    data = await self.stream.receive_some(65536)
                except _NET_ERRORS:
                    raise _Gone() from None
                if not data:
                    raise _Gone()
                self.h11.receive_data(bytes(data))


@define
class FakeProvider:
    base_url: str = ""
    cached_tokens: int = 0
    faults: deque[Fault] = field(factory=deque)
    outages: dict[str, Fault] = field(factory=dict)  # path -> the fault of every request
    chaos: Chaos | None = None
    requests: list[RecordedRequest] = field(factory=list)
    connections_opened: int = 0
    connections_open: int = 0
    peak_connections: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_aborted: int = 0
    streams_cut: int = 0
    client_disconnects: int = 0

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"

    def script(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    async def wait_for(self, predicate: Callable[[FakeProvider], bool], timeout: float = 5.0) -> None:
        with trio.fail_after(timeout):
            while not predicate(self):
                await trio.sleep(0.005)

    # ---- connection handling -------------------------------------------------------------

    async def serve_connection(self, stream: trio.abc.Stream) -> None:
        self.connections_opened += 1
        self.connections_open += 1
        self.peak_connections = max(self.peak_connections, self.connections_open)
        conn = _Conn(stream)
        try:
            while True:
                request = await self._read_request(conn)
                if request is None:
                    return
                self.requests.append(request)
                if await self._respond(conn, request):
                    return
                if conn.h11.our_state is h11.MUST_CLOSE or conn.h11.their_state is h11.MUST_CLOSE:
                    return
                conn.h11.start_next_cycle()
        except _Cut:
            return
        except (_Gone, *_NET_ERRORS):
            self.client_disconnects += 1
        finally:
            self.connections_open -= 1
            await trio.aclose_forcefully(stream)

    async def _read_request(self, conn: _Conn) -> RecordedRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.h11.next_event()
            if event is h11.NEED_DATA:
                data = await conn.stream.receive_some(65536)
                conn.h11.receive_data(bytes(data))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                headers = {k.decode().lower(): v.decode() for k, v in head.headers}
                return RecordedRequest(head.method.decode(), head.target.decode(), headers, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _respond(self, conn: _Conn, request: RecordedRequest) -> bool:
        """Answer `request`; True when the connection is to be closed afterwards."""
        fault = self.faults.popleft() if self.faults else self.outages.get(
            request.path.split("?")[0], NO_FAULT)
        if fault is NO_FAULT and self.chaos is not None:
            fault = self.chaos.pick(_wants_stream(request))
        await self._answer(conn, request, fault)
        return fault.close_after

    async def _answer(self, conn: _Conn, request: RecordedRequest, fault: Fault) -> None:
        fmt = {"/v1/chat/completions": "openai", "/v1/messages": "anthropic",
               "/v1/responses": "responses"}.get(request.path.split("?")[0])
        if fault.delay:
            await conn.wait(fault.delay)
        if fault.reset:
            await trio.aclose_forcefully(conn.stream)
            raise _Cut()
        if fmt is None or request.method != "POST":
            await self._send_whole(conn, 404, {}, b'{"error":{"message":"not found"}}')
            return
        try:
            body = request.json()
        except ValueError:
            body = None
        if fault.status is not None or not isinstance(body, dict):
            status = fault.status if fault.status is not None else 400
            await self._send_error(conn, fmt, status, fault, request)
            return
        reply = replies.plan_reply(body)
        prefix = {"openai": "chatcmpl", "anthropic": "msg", "responses": "resp"}[fmt]
        rid = f"{prefix}_fake_{len(self.requests)}"
        if body.get("stream"):
            build = {"openai": replies.openai_sse, "anthropic": replies.anthropic_sse,
                     "responses": replies.responses_sse}[fmt]
            await self._send_stream(conn, fmt, build(body, reply, self.cached_tokens, rid), fault)
        else:
            build_json = {"openai": replies.openai_json, "anthropic": replies.anthropic_json,
                          "responses": replies.responses_json}[fmt]
            data = json.dumps(build_json(body, reply, self.cached_tokens, rid)).encode()
            await self._send_whole(conn, 200, fault.headers, data)

    async def _send_whole(
        self, conn: _Conn, status: int, headers: Mapping[str, str], body: bytes
    ) -> None:
        all_headers = {"content-type": "application/json", "content-length": str(len(body))}
        all_headers.update(headers)
        await conn.send(h11.Response(status_code=status, headers=list(all_headers.items())))
        await conn.send(h11.Data(data=body))
        await conn.send(h11.EndOfMessage())

    async def _send_error(
        self, conn: _Conn, fmt: str, status: int, fault: Fault, request: RecordedRequest
    ) -> None:
        key = request.headers.get("x-api-key") or request.headers.get(
            "authorization", "").removeprefix("Bearer ")
        message = fault.message.replace("{api_key}", key)
        if fault.body is not None:
            body = fault.body
        elif fmt in ("openai", "responses"):
            body = json.dumps(replies.openai_error(
                status, message, fault.error_type, fault.error_code)).encode()
        else:
            body = json.dumps(replies.anthropic_error(status, message, fault.error_type)).encode()
        await self._send_whole(conn, status, fault.headers, body)

    async def _send_stream(self, conn: _Conn, fmt: str, events: list[bytes], fault: Fault) -> None:
        self.streams_started += 1
        headers = {"content-type": "text/event-stream", "cache-control": "no-cache"}
        headers.update(fault.headers)
        try:
            await conn.send(h11.Response(status_code=200, headers=list(headers.items())))
            for sent, event in enumerate(events):
                await self._before_chunk(conn, fmt, sent, fault)
                await conn.send(h11.Data(data=event))
            await conn.send(h11.EndOfMessage())
        except _Finished:
            await conn.send(h11.EndOfMessage())
        except _Cut:
            self.streams_cut += 1
            raise
        except (_Gone, *_NET_ERRORS):
            self.streams_aborted += 1
            raise
        self.streams_completed += 1

    async def _before_chunk(self, conn: _Conn, fmt: str, sent: int, fault: Fault) -> None:
        """Apply the fault scheduled after `sent` chunks (raise _Finished to end the body)."""
        if sent and fault.chunk_delay:
            await conn.wait(fault.chunk_delay)
        if fault.stall_after == sent:
            await conn.wait(fault.stall_for)
        if fault.cut_after == sent:
            await trio.aclose_forcefully(conn.stream)
            raise _Cut()
        if fault.malformed_after == sent:
            await conn.send(h11.Data(data=b'data: {"choices": [{"delta": \n\n'))
            raise _Finished()
        if fault.error_event_after == sent:
            error = {"openai": replies.openai_stream_error, "anthropic": replies.anthropic_stream_error,
                     "responses": replies.responses_stream_error}[fmt]()
            await conn.send(h11.Data(data=error))
            raise _Finished()


def _wants_stream(request: RecordedRequest) -> bool:
    try:
        body = request.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("stream") is True


class _Finished(Exception):
    """A fault ended the body early but cleanly."""


class _Cut(Exception):
    """A fault cut the connection on purpose (not counted as a client disconnect)."""


@asynccontextmanager
async def running_fake_provider(
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[FakeProvider]:
    """Start a FakeProvider on 127.0.0.1 (port 0) in a nursery; stop it on exit.
    With `ssl_context` (a server context) it speaks HTTPS."""
    fake = FakeProvider()
    async with trio.open_nursery() as nursery:
        tcp = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = tcp[0].socket.getsockname()[1]
        listeners: list[trio.abc.Listener[Any]] = list(tcp)
        scheme = "http"
        if ssl_context is not None:
            listeners = [trio.SSLListener(t, ssl_context, https_compatible=True) for t in tcp]
            scheme = "https"
        fake.base_url = f"{scheme}://127.0.0.1:{port}"
        nursery.start_soon(trio.serve_listeners, fake.serve_connection, listeners)
        try:
            yield fake
        finally:
            nursery.cancel_scope.cancel()
