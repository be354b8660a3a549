"""One request sent on a connection and its response head read: plain by `head.py`, else h11.

Owns: `send_request`: the request written (straight to the socket when the kernel takes
it all, the rest through `send_all`), then the response head read up to `HEAD_LIMIT`
and parsed by `head.py` when it is plain (a POST `Plain` head and a plain response),
else by an `h11.Connection` made for this exchange and fed the request and the heads
only (1xx heads skipped); the `Head` (status, headers, the body's first bytes, whether
the connection may be reused). A failure before any response byte is `Stale` (the pool
sends it again on a fresh connection); `conn` is closed on any failure.
"""

from __future__ import annotations

import re

import h11
import trio
from attrs import frozen

from adapters.providers import head
from adapters.providers.http11_failures import (
    NET_ERRORS,
    RequestRejected,
    ResponseCut,
    ResponseTimedOut,
    SendFailed,
    Stale,
    describe,
)
from adapters.providers.http11_target import Plain
from adapters.providers.upstream_connection import Connection

HEAD_LIMIT = 64 * 1024  # a response head (status line and headers) longer than this is refused
_BLANK_LINE = re.compile(rb"\n\r?\n")  # the end of a head, as h11 finds it


def _head_end(buf: bytes) -> int:
    """Where the first head in `buf` ends (after its blank line), -1 if it is not all there."""
    if buf[:1] == b"\n":
        return 1
    if buf[:2] == b"\r\n":
        return 2  # an empty head: h11 refuses it
    match = _BLANK_LINE.search(buf)
    return match.end() if match else -1


@frozen
class Head:
    status: int
    headers: list[tuple[bytes, bytes]]  # names lower-cased, as h11 gives them
    rest: bytes  # the bytes after the head: the start of the body
    keep: bool  # both sides allow the connection to be reused


async def send_request(
    conn: Connection, head: Plain | h11.Request, body: bytes, first_byte: float, deadline: float
) -> Head:
    """Send the request and read the response head; closes `conn` on any failure."""
    try:
        return await _exchange_head(conn, head, body, first_byte, deadline)
    except BaseException:
        conn.close()
        raise

async def _exchange_head(
    conn: Connection, request: Plain | h11.Request, body: bytes, first_byte: float, deadline: float
) -> Head:
    state: h11.Connection | None = None
    if isinstance(request, Plain):
        data = request.wire + body
    else:
        state = h11.Connection(h11.CLIENT)
        data = _h11_request(state, request, body)
    by = min(deadline, trio.current_time() + first_byte)
    sent = conn.send_now(data)
    try:
        if sent < len(data):  # the rest (a full buffer, or an error) the ordinary way
            with trio.fail_at(by):
                await conn.stream.send_all(memoryview(data)[sent:])
    except trio.TooSlowError:
        raise ResponseTimedOut("sending the request", "timed out") from None
    except NET_ERRORS as exc:
        raise Stale(SendFailed("sending the request", describe(exc))) from None
    # `head.py` parses a plain head, else h11 the head (or heads: 1xx come first),
    # fed nothing else: the body that follows is `chunked`'s
    what = "waiting for the response headers"
    buf = b""
    received = False
    while True:
        end = _head_end(buf)
        if end < 0:
            if len(buf) > HEAD_LIMIT:
                raise ResponseCut(what, "the response head is too long")
            try:
                got = await conn.receive(by)
            except trio.TooSlowError:
                raise ResponseTimedOut(what, "timed out") from None
            except NET_ERRORS as exc:
                cut = ResponseCut(what, describe(exc))
                if received:
                    raise cut from None
                raise Stale(cut) from None
            if not got:
                if not received:
                    raise Stale(ResponseCut(what, "the server closed the connection"))
                raise ResponseCut(what, "the server closed the connection")
            received = True
            buf += got
            continue
        if state is None:
            plain = head.parse_response(buf[:end])
            if plain is not None:
                status, headers, keep = plain
                return Head(status, headers, buf[end:], keep)
            assert isinstance(request, Plain)
            state = h11.Connection(h11.CLIENT)  # not plain: h11 decides, as it did
            _h11_request(state, request.as_h11(), body)
        state.receive_data(buf[:end])
        buf = buf[end:]
        try:
            event = state.next_event()
        except h11.RemoteProtocolError as exc:
            raise ResponseCut(what, f"the server broke HTTP/1.1 ({exc})") from None
        if isinstance(event, h11.Response):
            # h11 has turned our side to MUST_CLOSE if either side asked to close
            return Head(event.status_code, list(event.headers), buf,
                         keep=state.our_state is h11.DONE)
        # an InformationalResponse (1xx) is skipped: the next head follows


def _h11_request(state: h11.Connection, request: h11.Request, body: bytes) -> bytes:
    """`request` and `body` sent through `state`: the bytes to write."""
    try:
        data = state.send(request) or b""
        if body:
            data += state.send(h11.Data(data=body)) or b""
        return data + (state.send(h11.EndOfMessage()) or b"")
    except h11.LocalProtocolError:  # its text would quote the header: never passed on
        raise RequestRejected(
            "encoding the request", "the request is not valid HTTP/1.1"
        ) from None
