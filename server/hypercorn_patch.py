"""The changes this gateway makes to Hypercorn (0.18), put in place by one `install()`.

Owns: the classes Hypercorn's Trio worker builds for each TCP connection, its HTTP/1.1
protocol and its HTTP stream, and replacing Hypercorn's with them (`install()`, which
`server/serve.py` calls before `hypercorn.trio.serve` runs). Each fixes a cost or a
hazard measured in this gateway (docs/performance.md); nothing else in Hypercorn changes.

1. A connection's race never stops the server (`GuardedTCPServer`). Hypercorn closes a
   connection with `send_eof()` without its send lock, and Trio holds a stream's send
   guard across that call's checkpoint. When the client breaks off a request body just
   as the connection is being closed, Hypercorn's reader answers with a 400 at that
   moment, `send_all` raises `trio.BusyResourceError`, nothing in Hypercorn catches it,
   and `trio.serve_listeners` then cancels every connection and ends the server. The
   guard treats it as what it means: the write is dropped and the protocol is told the
   connection closed, as Hypercorn does for a peer that went away.
2. Writes go straight to the socket when they can (`DirectSendTCPServer`, extending the
   guard): a write to a plain TCP connection whose send side is free is `os.write`; when
   the kernel takes all of it that is the whole send (no `trio.Lock`, no shielded cancel
   scope, no trip through Trio's scheduler). What the kernel does not take (a full
   buffer: a slow client), and any error, goes Hypercorn's way behind the lock, so writes
   stay in order, back-pressure holds and errors are handled as before. TLS always goes
   Hypercorn's way.
3. Fewer sends per response (`CoalescingH11Protocol`): a response head is held and goes
   out with the first body bytes (or the body's end) when the body is known to follow at
   once: the answer has a `content-length`, or the app marked its `http.response.start`
   with `HEAD_WITH_BODY: True` (the SSE writer, `server/streaming.py`, whose opening frame
   comes next). Any other head is sent at once, as is every 1xx. A send of zero bytes (the
   end of a `content-length` body) is not made. A held head always goes before anything
   that follows it (a WebSocket's raw data, the stream's close), never dropped.
4. A chunked body's parts framed by us (`FramingHTTPStream` with the protocol's
   `write_part`): once h11 has written a head with `Transfer-Encoding: chunked` (a stream:
   no `content-length`, an HTTP/1.1 client, not HEAD), each ASGI body message with
   `more_body` is framed here (`<hex size>\\r\\n<data>\\r\\n`, what h11's chunked writer
   writes, which keeps no state) and written at once, skipping Hypercorn's per-part
   checks and event objects and h11's per-event machinery. The last body message (no
   `more_body`) is framed the same way and goes out in one send with the chunked
   terminator (`0\\r\\n\\r\\n`), which h11 still writes, so its state reaches DONE and
   the connection is kept alive as before. Anything else (a body part while h11 is not
   sending a body, trailers, an empty last part) goes Hypercorn's way. Every part is
   still written when the app sends it: streams stay incremental, in order. A part goes
   to the connection's `write_now` (rule 2's write, without a `RawData` event) when the
   connection is a `DirectSendTCPServer`; what the kernel does not take goes through
   `protocol_send`. An app holding the stream's own `app_send` may send a `more_body`
   part without its message (`body_part_sender`: `send_part`, the same checks and the
   same way out; the SSE writer's per-chunk sends).

5. A well-formed response head written by us (`server/response_head.py`): a head with
   at most one `content-length` and nothing unusual, on a kept-alive HTTP/1.1
   connection, is checked once and written as h11 writes it (with h11's
   `Transfer-Encoding: chunked` when it has no length), skipping Hypercorn's h11 event
   and h11's two passes of header checks; h11's connection is moved on to the body as
   its own `send` moves it. It is held or sent as rule 3 says, and a chunked one's
   parts are framed by rule 4. Every other head (1xx, HEAD, HTTP/1.0, an app's own
   framing headers, `connection: close`, the last request Hypercorn keeps a connection
   for, odd bytes) goes h11's way. Hypercorn's own headers for it (`date`, `server`) are
   asked of Hypercorn once per wall-clock second per connection, not formatted per head.

6. A plain request read by us (`server/request_head.py`): a read that holds one whole
   request of the plain kind (HTTP/1.1, `name: value` lines, one `host`, at most one
   `content-length` and its whole body, nothing framing- or connection-related, nothing
   after it) on an idle kept-alive connection is parsed in one pass, h11's connection is
   moved through the request and its end by its own event processing (given events that
   carry only the `host` and `content-length`, all that step reads of them), and the
   stream is made and fed as Hypercorn's reader makes and feeds it, but for its body:
   one `http.request` message with all of it (Hypercorn's: the body, then an empty last
   part). Every other read
   (a malformed or unusual request, a partial one, pipelined requests, a connection h11
   is mid-way through, Hypercorn's raw-header option) goes to h11 as before, which
   answers what it refuses with its 4xx.

7. A sized head's body written by us: when the head went rule 5's way with a
   `content-length` and the app's next body message is its last and holds the whole
   body (exactly that many bytes, no trailers), the held head and the body go out in one
   write and h11's connection is moved to the end of the body by its own event
   processing, without Hypercorn's body and end events and h11's `Data` and
   `EndOfMessage` sends (whose writer only counts the bytes); the stream then closes as
   Hypercorn's does (the access log, `StreamClosed`). A body in parts, a short or long
   one, trailers, goes Hypercorn's and h11's way (h11 refuses a wrong length as before).

Hypercorn looks these classes up by their module-level names when a connection or a
request starts (`hypercorn.trio.run.TCPServer`, `hypercorn.protocol.H11Protocol`,
`hypercorn.protocol.h11.HTTPStream`); `install()` replaces those three names for the
process (idempotent). Written against Hypercorn 0.18 and h11 0.16 (pinned in
constraints.txt); `tests/server/test_hypercorn_patch.py` and
`tests/server/test_connection_guard.py` check them on real sockets and a real server.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import hypercorn.protocol
import hypercorn.protocol.h11 as hypercorn_h11
import hypercorn.trio.run as hypercorn_run
import trio
from h11._headers import Headers
from hypercorn.events import Closed, RawData, Updated
from hypercorn.events import Event as ConnectionEvent
from hypercorn.protocol.events import Body, Data, EndBody, Event, Request, Response, StreamClosed
from hypercorn.protocol.h11 import STREAM_ID, H11Protocol
from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.typing import ASGISendEvent, H11SendableEvent, HTTPResponseBodyEvent

from adapters.clock import epoch_seconds
from server.request_head import plain_request
from server.response_head import CheckedNames, direct_head

log = logging.getLogger("umg.server")

# The ASGI `http.response.start` key by which an app says its first body bytes follow
# at once (Hypercorn passes the message through and ignores keys it does not know).
HEAD_WITH_BODY = "umg.head_with_body"

_CHUNKED_LINE = b"\r\ntransfer-encoding: chunked\r\n"


# ---- 1 and 2: the connection --------------------------------------------------------------


class GuardedTCPServer(TCPServer):
    async def protocol_send(self, event: ConnectionEvent) -> None:
        try:
            await super().protocol_send(event)
        except trio.BusyResourceError:
            log.debug("write to a connection that is closing dropped")
            await self.protocol.handle(Closed())


class DirectSendTCPServer(GuardedTCPServer):
    """Hypercorn's connection, writing straight to the socket when it can (rule 2)."""

    def write_now(self, data: bytes) -> int:
        """What the kernel takes of `data` at once, written (0: all of it goes Hypercorn's
        way: the send side is busy, TLS, a shut or closed socket, a full buffer, an error)."""
        if self.send_lock.locked():
            return 0
        stream = self.stream
        if not isinstance(stream, trio.SocketStream) or stream.socket.did_shutdown_SHUT_WR:
            return 0
        fd = stream.socket.fileno()
        try:
            return os.write(fd, data) if fd >= 0 else 0
        except OSError:  # a full buffer, or an error the ordinary way reports
            return 0

    async def protocol_send(self, event: ConnectionEvent) -> None:
        if isinstance(event, RawData) and event.data:
            sent = self.write_now(event.data)
            if sent == len(event.data):
                return
            event = RawData(data=event.data[sent:])
        await super().protocol_send(event)


# ---- 3 and 4: the HTTP/1.1 protocol and its stream ----------------------------------------


def _vouched(start: dict[str, Any] | None) -> bool:
    """The app said its first body bytes follow its head at once (`HEAD_WITH_BODY`)."""
    return start is not None and start.get(HEAD_WITH_BODY) is True


def _held(event: h11.Response, start: dict[str, Any] | None) -> bool:
    return _vouched(start) or any(name == b"content-length" for name, _ in event.headers)


class FramingHTTPStream(HTTPStream):
    """Hypercorn's HTTP stream, handing a chunked body's parts to the protocol (rule 4)."""

    framer: CoalescingH11Protocol | None = None  # set once a chunked head is written
    sized: CoalescingH11Protocol | None = None  # set once a sized head is written by us (rule 7)
    sized_length = -1  # that head's content-length

    async def _finish_sized(self, message: HTTPResponseBodyEvent) -> bool:
        """A sized head's whole body in its last message, written with the held head and
        the stream closed as Hypercorn closes it (rule 7); False: nothing was done."""
        sized = self.sized
        if (
            sized is None
            or message.get("more_body", False)
            or self.state is not ASGIHTTPState.RESPONSE
            or self.response.get("trailers", False)
        ):
            return False
        body = message.get("body", b"")
        if len(body) != self.sized_length or not await sized.finish_sized(bytes(body)):
            return False
        self.sized = None
        # the rest of Hypercorn's `_send_closed`, past the end of the body
        self.state = ASGIHTTPState.CLOSED
        await self.config.log.access(self.scope, self.response, epoch_seconds() - self.start_time)
        await self.send(StreamClosed(stream_id=self.stream_id))
        return True

    async def whole_body(self, body: bytes) -> None:
        """A request's whole body, read with its head (rule 6), given to the app as one
        `http.request` message (Hypercorn's reader gives a body part and then an empty
        last one: two messages, two puts, two receives)."""
        if not self.closed:
            await self.app_put({"type": "http.request", "body": body, "more_body": False})

    async def send_part(self, body: bytes) -> None:
        """`app_send` of `{"type": "http.response.body", "body": body, "more_body": True}`,
        without the message: straight to `write_part` when `app_send` would go there (the
        SSE writer's per-chunk send, `body_part_sender`)."""
        framer = self.framer
        if framer is not None and self.state is ASGIHTTPState.RESPONSE and framer.sending_body():
            if body:
                rest = framer.write_part_now(body)  # `write_part` without its coroutine
                if rest:
                    await framer.send(RawData(data=rest))
            return
        await self.app_send({"type": "http.response.body", "body": body, "more_body": True})

    async def app_send(self, message: ASGISendEvent | None) -> None:
        if self.sized is not None and message is not None and message["type"] == "http.response.body":
            if await self._finish_sized(message):
                return
            self.sized = None  # any other body message: Hypercorn's and h11's way from here
        framer = self.framer
        if (
            framer is not None
            and message is not None
            and message["type"] == "http.response.body"
            and self.state is ASGIHTTPState.RESPONSE
            and framer.sending_body()
        ):
            body = message.get("body", b"")
            if message.get("more_body", False):
                if body:
                    await framer.write_part(bytes(body))
                return
            if body and not self.response.get("trailers", False):
                framer.hold_part(bytes(body))  # goes with the terminator, below
                message = {"type": "http.response.body", "body": b"", "more_body": False}
        await super().app_send(message)


class CoalescingH11Protocol(H11Protocol):
    """Hypercorn's HTTP/1.1 protocol, with held heads, no empty sends and our own chunk
    framing (rules 3 and 4)."""

    _held_bytes = b""  # a held response head and/or a last body part, not yet sent
    _direct: DirectSendTCPServer | None = None  # the connection `write_part` writes through
    _looked = False  # `_direct` was looked up (the connection's `send` never changes)
    _headers_second = -1  # the wall-clock second `_headers` (Hypercorn's, with its `date`) is of
    _headers: tuple[tuple[bytes, bytes], ...] = ()
    _checked: CheckedNames | None = None  # the names of the last direct head (response_head.py)

    def _response_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """Hypercorn's own response headers (`date`, `server`, ...), made once per second of
        the connection's life: `date` has whole seconds, and formatting it costs a request
        about 2.7 µs (rule 5's heads; h11's way still asks Hypercorn each time)."""
        second = int(epoch_seconds())  # the OS's wall clock, which Hypercorn's `date` reads
        if second != self._headers_second:
            self._headers = tuple(self.config.response_headers("h11"))
            self._headers_second = second
        return self._headers

    def _start_message(self) -> dict[str, Any] | None:
        stream = self.stream
        found = getattr(stream, "response", None) if stream is not None else None
        return found if isinstance(found, dict) else None

    def sending_body(self) -> bool:
        return isinstance(self.connection, h11.Connection) and self.connection.our_state is h11.SEND_BODY

    async def write_part(self, body: bytes) -> None:
        """One body part, framed as h11's chunked writer frames it, written now: straight
        to the socket when the connection is a `DirectSendTCPServer` and the kernel takes it
        all (rule 2 without its event), else through the connection's `protocol_send`."""
        rest = self.write_part_now(body)
        if rest:
            await self.send(RawData(data=rest))

    def write_part_now(self, body: bytes) -> bytes:
        """`write_part`'s framing and direct write; what is left to send (b"": all written)."""
        data = b"%x\r\n%b\r\n" % (len(body), body)
        if self._held_bytes:
            data, self._held_bytes = self._held_bytes + data, b""
        return self._write_now(data)

    async def finish_sized(self, body: bytes) -> bool:
        """The whole body of a sized head written by us (`body` is as long as its
        `content-length`), with the held head: h11's connection moved on by the body's end
        (its own event processing; its writer would only count the bytes), then written
        (rule 7). False if h11 is not sending that body: nothing was done."""
        connection = self.connection
        if not isinstance(connection, h11.Connection) or connection.our_state is not h11.SEND_BODY:
            return False
        try:
            connection._process_event(h11.SERVER, h11.EndOfMessage())
        except BaseException:
            connection._process_error(h11.SERVER)
            raise
        data, self._held_bytes = self._held_bytes + body, b""
        rest = self._write_now(data) if data else b""
        if rest:
            await self.send(RawData(data=rest))
        return True

    def _write_now(self, data: bytes) -> bytes:
        """`data` written straight to the socket when the connection is a
        `DirectSendTCPServer`; what is left for `protocol_send` (b"": all written)."""
        if not self._looked:
            server = getattr(self.send, "__self__", None)
            self._direct = server if isinstance(server, DirectSendTCPServer) else None
            self._looked = True
        direct = self._direct
        if direct is not None:
            sent = direct.write_now(data)
            return data[sent:] if sent < len(data) else b""
        return data

    def hold_part(self, body: bytes) -> None:
        """The last body part: framed, it goes out with the chunked terminator."""
        self._held_bytes += b"%x\r\n%b\r\n" % (len(body), body)

    async def handle(self, event: ConnectionEvent) -> None:
        if type(event) is RawData and await self._handle_plain(event.data):
            return
        await super().handle(event)

    async def _handle_plain(self, data: bytes) -> bool:
        """A whole plain request read by us and handed on as Hypercorn's reader hands it
        (rule 6); False: nothing was done, h11's way."""
        connection = self.connection
        if (
            self.stream is not None
            or not isinstance(connection, h11.Connection)
            or connection.their_state is not h11.IDLE
            or connection.our_state is not h11.IDLE
            or connection._receive_buffer  # h11 holds bytes of its own: it reads on
            or connection._receive_buffer_closed
            or self.config.h11_pass_raw_headers
        ):
            return False
        request = plain_request(data, self.config.h11_max_incomplete_size)
        if request is None:
            return False
        # h11's state step reads only a request's method, version and its framing,
        # `connection`, `upgrade` and `expect` headers (the request has only `host` and
        # `content-length` of them): it moves on exactly as for the whole request.
        framing = [(b"host", b"host", request.host)]
        if request.length is not None:
            framing.append((b"content-length", b"content-length", request.length))
        try:
            connection._process_event(h11.CLIENT, h11.Request(
                method=request.method, target=request.target, headers=Headers(framing),
                http_version=b"1.1", _parsed=True))
            connection._process_event(h11.CLIENT, h11.EndOfMessage())
        except BaseException:
            connection._process_error(h11.CLIENT)
            raise
        # what Hypercorn's `_handle_events` does with h11's events for it: the idle timer
        # stopped, no protocol switch (no `upgrade`, HTTP/1.1), an HTTP stream, its body
        await self.send(Updated(idle=False))
        stream = hypercorn_h11.HTTPStream(  # type: ignore[attr-defined]
            self.app, self.config, self.context, self.task_group, self.ssl, self.client,
            self.server, self.stream_send, STREAM_ID,
        )
        self.stream = stream
        await stream.handle(Request(
            stream_id=STREAM_ID, headers=request.headers, http_version="1.1",
            method=request.method.decode("ascii").upper(), raw_path=request.target,
            state=self.connection_state,
        ))
        self.keep_alive_requests += 1
        await self.context.mark_request()
        if isinstance(stream, FramingHTTPStream):
            await stream.whole_body(request.body)
        else:
            if request.body:
                await stream.handle(Body(stream_id=STREAM_ID, data=request.body))
            await stream.handle(EndBody(stream_id=STREAM_ID))
        return True

    async def _send_h11_event(self, event: H11SendableEvent) -> None:
        try:
            data = self.connection.send(event)
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            return
        if isinstance(event, h11.Response):
            stream = self.stream
            if (
                isinstance(stream, FramingHTTPStream)
                and stream.scope["method"] != "HEAD"
                and _CHUNKED_LINE in data.lower()
            ):
                stream.framer = self
            if _held(event, self._start_message()):
                self._held_bytes += data
                return
        if self._held_bytes:
            data, self._held_bytes = self._held_bytes + data, b""
        if data:
            await self.send(RawData(data=data))

    async def _flush(self) -> None:
        if self._held_bytes:
            data, self._held_bytes = self._held_bytes, b""
            await self.send(RawData(data=data))

    async def stream_send(self, event: Event) -> None:
        if isinstance(event, Data | StreamClosed):  # raw data or the end: held bytes first
            await self._flush()
        elif type(event) is Response and event.status_code >= 200 and await self._send_direct_head(event):
            return
        await super().stream_send(event)

    async def _send_direct_head(self, event: Response) -> bool:
        """A well-formed head written by us (rule 5); False: h11's way."""
        if self.keep_alive_requests >= self.config.keep_alive_max_requests:
            return False  # Hypercorn adds `connection: close`: h11's way
        connection = self.connection
        if not isinstance(connection, h11.Connection):
            return False
        headers = [*event.headers, *self._response_headers()]
        checked = self._checked
        if checked is None:
            checked = self._checked = CheckedNames()
        data = direct_head(connection, event.status_code, headers, checked)
        if data is None:
            return False
        sized = any(name == b"content-length" for name, _ in headers)
        stream = self.stream
        if isinstance(stream, FramingHTTPStream):
            if sized:  # rule 7
                stream.sized = self
                stream.sized_length = int(next(value for name, value in headers if name == b"content-length"))
            else:  # chunked (never HEAD here): rule 4
                stream.framer = self
        if self._held_bytes:  # cannot happen before a head; kept in order all the same
            data, self._held_bytes = self._held_bytes + data, b""
        if sized or _vouched(self._start_message()):
            self._held_bytes = data  # its body follows at once (rule 3)
        else:
            await self.send(RawData(data=data))
        return True


def body_part_sender(send: Any) -> Callable[[bytes], Awaitable[None]] | None:
    """For an ASGI `send` that is a `FramingHTTPStream`'s own `app_send` (the hot routes'
    streams), its `send_part`: a `more_body` body part sent without the message dict and
    `app_send`'s dispatch. None for any other `send` (a middleware's): send messages."""
    stream = getattr(send, "__self__", None)
    if isinstance(stream, FramingHTTPStream) and getattr(send, "__func__", None) is FramingHTTPStream.app_send:
        return stream.send_part
    return None


def install() -> None:
    """Put the classes above in Hypercorn's place for this process (idempotent)."""
    hypercorn_run.TCPServer = DirectSendTCPServer  # type: ignore[attr-defined]
    # Both names are imported by those modules, not exported (mypy's attr-defined); the
    # import there is what Hypercorn looks up, so it is what is replaced.
    if hypercorn.protocol.H11Protocol is not CoalescingH11Protocol:  # type: ignore[attr-defined]
        hypercorn.protocol.H11Protocol = CoalescingH11Protocol  # type: ignore[attr-defined]
    hypercorn_h11.HTTPStream = FramingHTTPStream  # type: ignore[attr-defined]
