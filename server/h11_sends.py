"""How an HTTP/1.1 response reaches the socket: fewer writes per response under Hypercorn.

Owns: the one change this gateway makes to Hypercorn's HTTP/1.1 protocol (installed by
`install()`, which `server/serve.py` calls before serving). Hypercorn writes every h11
event as a socket send of its own (a `trio.Lock`, a shielded cancel scope and a
`send_all` each): the response head, each body part, and the end of the body, which for
a `content-length` answer is a send of zero bytes. Here:

- A response head is held, and goes out in the same send as the first body bytes (or
  the end of the body), when the body is known to follow at once: the answer has a
  `content-length` (a whole answer: its body is the next message, Quart's and ours), or
  the app said so on its `http.response.start` message with `HEAD_WITH_BODY: True` (the
  SSE writer, `server/streaming.py`, whose opening frame is sent right after the head).
  Any other head (a stream that may wait before its first byte) is sent at once, as
  before; so is every 1xx (`100 Continue`, a WebSocket's `101`).
- A send of zero bytes (the end of a `content-length` body) is not made.
- A write to a plain TCP connection whose send side is free goes straight to the socket
  (`DirectSendTCPServer`): when the kernel takes all of it, that is the whole send, with
  no `trio.Lock`, no cancel scope and no trip through Trio's scheduler (Hypercorn's
  path yields twice per write: the lock and the socket). Whatever the kernel does not take
  (a full buffer: a slow client), and any error, goes the ordinary way, behind the lock,
  so writes stay in order, back-pressure holds and errors are handled as Hypercorn does
  (it also keeps `server/connection_guard.py`'s guard: it extends that class). TLS
  connections always go the ordinary way.
- Nothing else changes: every body part is still sent when the app sends it (streams
  stay incremental), in order; a held head is sent before anything else that would
  follow it (a WebSocket's raw data, the stream's close), never dropped.

Each send saved is one pass through Hypercorn's send path: a JSON answer goes out in one
send instead of three, a stream's head with its opening frame (see docs/performance.md).
Written against Hypercorn 0.18 (`hypercorn.protocol.h11.H11Protocol`, pinned in
constraints.txt); `tests/server/test_h11_sends.py` checks the sends on a real server.
"""

from __future__ import annotations

import os
from typing import Any

import h11
import hypercorn.protocol
import hypercorn.trio.run as hypercorn_run
import trio
from hypercorn.events import Event as ConnectionEvent
from hypercorn.events import RawData
from hypercorn.protocol.events import Data, Event, StreamClosed
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.typing import H11SendableEvent

from server.connection_guard import GuardedTCPServer

# The ASGI `http.response.start` key by which an app says its first body bytes follow
# at once (Hypercorn passes the message through and ignores keys it does not know).
HEAD_WITH_BODY = "umg.head_with_body"


def _held(event: h11.Response, start: dict[str, Any] | None) -> bool:
    if start is not None and start.get(HEAD_WITH_BODY) is True:
        return True
    return any(name == b"content-length" for name, _ in event.headers)


class CoalescingH11Protocol(H11Protocol):
    """Hypercorn's HTTP/1.1 protocol, with the held head and no empty sends (see above)."""

    _head = b""  # a held response head, not yet sent

    def _start_message(self) -> dict[str, Any] | None:
        stream = self.stream
        found = getattr(stream, "response", None) if stream is not None else None
        return found if isinstance(found, dict) else None

    async def _send_h11_event(self, event: H11SendableEvent) -> None:
        try:
            data = self.connection.send(event)
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            return
        if isinstance(event, h11.Response) and _held(event, self._start_message()):
            self._head += data
            return
        if self._head:
            data, self._head = self._head + data, b""
        if data:
            await self.send(RawData(data=data))

    async def _flush(self) -> None:
        if self._head:
            data, self._head = self._head, b""
            await self.send(RawData(data=data))

    async def stream_send(self, event: Event) -> None:
        if isinstance(event, Data | StreamClosed):  # raw data or the end: the head first
            await self._flush()
        await super().stream_send(event)


class DirectSendTCPServer(GuardedTCPServer):
    """Hypercorn's connection, writing straight to the socket when it can (see above)."""

    async def protocol_send(self, event: ConnectionEvent) -> None:
        if isinstance(event, RawData) and event.data and not self.send_lock.locked():
            stream = self.stream
            if isinstance(stream, trio.SocketStream) and not stream.socket.did_shutdown_SHUT_WR:
                fd = stream.socket.fileno()
                try:
                    sent = os.write(fd, event.data) if fd >= 0 else 0
                except OSError:  # a full buffer, or an error the ordinary way reports
                    sent = 0
                if sent == len(event.data):
                    return
                event = RawData(data=event.data[sent:])
        await super().protocol_send(event)


def install() -> None:
    """Make Hypercorn use `CoalescingH11Protocol` for HTTP/1.1 and `DirectSendTCPServer`
    for each connection (idempotent; after `connection_guard.install()`, whose class the
    latter extends).

    Hypercorn looks both classes up by their module-level names when a connection starts
    (`hypercorn.protocol.H11Protocol`, `hypercorn.trio.run.TCPServer`), so this replaces
    those two names for the process."""
    if hypercorn.protocol.H11Protocol is not CoalescingH11Protocol:
        hypercorn.protocol.H11Protocol = CoalescingH11Protocol  # type: ignore[misc]
    hypercorn_run.TCPServer = DirectSendTCPServer  # type: ignore[attr-defined]
