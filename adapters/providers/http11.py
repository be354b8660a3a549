"""A pooled HTTP/1.1 client on h11 + trio: the engine under the provider transport.

Owns: connections to upstream origins (plain TCP or TLS), the bounded pool per origin,
one request/response exchange on a connection, and when a connection may be reused. It
knows nothing of providers or JSON; `transport.py` speaks through it.

This module owns the pool (`ConnectionPool`, `OriginPool`: the bound, the idle list,
the stale retry) and the rules below; each other decision is its own module, whose
public names are importable from here too: the failures (http11_failures.py), where a
request goes (http11_target.py: `Origin`, `Target`, `parse_target`, `Plain`), the TCP
connect (tcp_connect.py), the read timer (read_timer.py), one socket's reads and
writes (upstream_connection.py), the request and its response head
(exchange_head.py) and the body (exchange.py: `Exchange`).

Rules:
- Bound: at most `PoolLimits.max_connections` connections per origin (scheme, host,
  port) are open at once; a caller waits for a free one until its connect deadline
  (`PoolTimedOut`). Idle connections are kept, most recently used first, up to
  `max_idle` per origin and for at most `keepalive_expiry` seconds; one that has turned
  readable while idle (the server closed it) is dropped when it is taken out.
- Reuse: a connection goes back to the pool only after a complete response to a complete
  request, when neither side asked to close. Leaving an exchange early (error, early
  close, cancellation) closes its connection: a half-read connection is never reused.
- Stale connections: when a connection taken from the pool fails before one byte of the
  response arrived (the send fails, or EOF or a reset comes first), the request is sent
  once more on a fresh connection. A fresh connection is never retried.
- TLS for https origins: `trio.SSLStream` over TCP with the given context (by default
  `ssl.create_default_context()`: certificates and host names are verified).
- Failures are `TransportFailure` subclasses naming the phase (`what`); which
  `FailureKind` each is lives in `failures.TRANSPORT_KINDS`. Their text never holds
  request headers or bodies (h11's complaints about our own request are not passed on).
- Deadlines are absolute `trio.current_time()` values chosen by the caller; no cancel
  scope is held open across a return to the caller. A wait for a plain TCP socket to
  turn readable is bounded without a cancel scope of its own (a `trio.CancelScope` per
  read cost about a tenth of a relayed chunk's CPU): the pool's `ReadTimer` keeps the
  deadlines of the reads that wait, in a heap, and its one task (per pool and Trio run,
  a system task, started on first use) sleeps until the earliest; a read still waiting
  then is woken with `trio.lowlevel.notify_closing` and raises `trio.TooSlowError`
  (its connection is closed, as after any timeout). A read whose deadline has passed
  before it waits raises at once, as a cancel scope's would.
- No trip through Trio's scheduler where nothing waits: a free pool slot is taken at
  once, and a request on a plain TCP connection is written straight to the socket when
  the kernel takes it all (`send_all`, with its deadline, sends what it does not take and
  reports errors). TLS always goes through `send_all`. Reads on plain TCP are `os.read`
  on the non-blocking socket, with Trio asked only to wait until it is readable.
- Heads: a plain request head (`Plain`) is written and a plain response head parsed by
  `head.py`, with no `h11.Connection` for the exchange; any other request (an
  `h11.Request`), or a response head `head.py` does not take (1xx, HTTP/1.0, folded or
  malformed lines, unusual framing), goes through an `h11.Connection` made for that
  exchange, which is fed the request and the heads and nothing past them. The body is
  decoded by `chunked.py` (chunked, `content-length`, or until close), incrementally,
  each read's bytes handed over as they arrive. A connection is reused when neither side
  asked to close and nothing followed the body's end.
"""

from __future__ import annotations

import ssl
from collections import deque

import h11
import trio
from attrs import frozen

from adapters.providers.exchange import Exchange
from adapters.providers.exchange_head import send_request
from adapters.providers.http11_failures import (
    NET_ERRORS,
    ConnectFailed,
    ConnectTimedOut,
    PoolTimedOut,
    RequestRejected,
    ResponseCut,
    ResponseTimedOut,
    SendFailed,
    Stale,
    TransportFailure,
    describe,
)
from adapters.providers.http11_target import Origin, Plain, Target, parse_target
from adapters.providers.read_timer import ReadTimer
from adapters.providers.tcp_connect import open_tcp
from adapters.providers.upstream_connection import Connection


@frozen
class PoolLimits:
    # per origin, open at once: each open stream holds one, so this caps the streams in
    # flight to one provider (`limits.upstream_connections` in the configuration)
    max_connections: int = 1024
    # per origin, kept for reuse: as many as a steady load holds in flight, so it never
    # closes connections it will reopen a moment later (at 50, 64 concurrent requests
    # reopened one connection per 5 requests); a burst's surplus is closed on return
    max_idle: int = 256
    keepalive_expiry: float = 30.0  # seconds an idle connection is kept


class OriginPool:
    """One origin's share of the pool: its slots (the bound) and its idle connections,
    the most recently used last."""

    __slots__ = ("idle", "slots")

    def __init__(self, limits: PoolLimits) -> None:
        self.slots = trio.Semaphore(limits.max_connections)
        self.idle: deque[Connection] = deque()


class ConnectionPool:
    def __init__(self, limits: PoolLimits | None = None, ssl_context: ssl.SSLContext | None = None):
        self._limits = limits or PoolLimits()
        self._ssl_context = ssl_context
        self._origins: dict[Origin, OriginPool] = {}
        self._closed = False
        self._timer = ReadTimer()  # the deadlines of its connections' waiting reads

    @property
    def limits(self) -> PoolLimits:
        return self._limits

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:  # built on first use: loading the CA store takes ms
            self._ssl_context = ssl.create_default_context()
            self._ssl_context.set_alpn_protocols(["http/1.1"])
        return self._ssl_context

    async def open(
        self, target: Target, head: Plain | h11.Request, body: bytes, *,
        connect: float, first_byte: float, deadline: float,
    ) -> Exchange:
        """Send one request and wait for its response head (see the module rules)."""
        home = self._origins.get(target.origin)
        if home is None:
            home = self._origins.setdefault(target.origin, OriginPool(self._limits))
        try:
            home.slots.acquire_nowait()  # a free slot (the usual case): no scheduler trip
        except trio.WouldBlock:
            await self._wait_for_slot(home, min(deadline, trio.current_time() + connect))
        try:
            conn = self._check_out(home)
            if conn is not None:
                try:
                    return Exchange(self, home, conn, await send_request(conn, head, body, first_byte, deadline))
                except Stale:
                    pass  # closed by send_request; go on with a fresh connection
            conn = await self._connect(target.origin, min(deadline, trio.current_time() + connect))
            try:
                response = await send_request(conn, head, body, first_byte, deadline)
            except Stale as stale:
                raise stale.failure from None
            return Exchange(self, home, conn, response)
        except BaseException:
            home.slots.release()
            raise

    async def _wait_for_slot(self, home: OriginPool, by: float) -> None:
        try:
            with trio.fail_at(by):
                await home.slots.acquire()
        except trio.TooSlowError:
            raise PoolTimedOut(
                "waiting for a free connection",
                f"all {self._limits.max_connections} connections to the upstream are busy",
            ) from None

    def _check_out(self, home: OriginPool) -> Connection | None:
        idle = home.idle
        oldest_kept = trio.current_time() - self._limits.keepalive_expiry
        while idle and idle[0].idle_since < oldest_kept:
            idle.popleft().close()
        while idle:
            conn = idle.pop()
            if not conn.looks_closed():
                return conn
            conn.close()
        return None

    def check_in(self, home: OriginPool, conn: Connection) -> None:
        if self._closed:
            conn.close()
            return
        conn.idle_since = trio.current_time()
        home.idle.append(conn)
        while len(home.idle) > self._limits.max_idle:
            home.idle.popleft().close()

    async def _connect(self, origin: Origin, by: float) -> Connection:
        tcp: trio.SocketStream | None = None
        try:
            with trio.fail_at(by):
                tcp = await open_tcp(origin.host, origin.port)
                if origin.scheme != "https":
                    return Connection(tcp, tcp, self._timer)
                tls = trio.SSLStream(
                    tcp, self._tls(), server_hostname=origin.host, https_compatible=True
                )
                await tls.do_handshake()
                return Connection(tls, tcp, self._timer)
        except trio.TooSlowError:
            if tcp is not None:
                tcp.socket.close()
            raise ConnectTimedOut("connecting", "timed out") from None
        except NET_ERRORS as exc:
            if tcp is not None:
                tcp.socket.close()
            raise ConnectFailed("connecting", describe(exc)) from None
        except BaseException:
            if tcp is not None:
                tcp.socket.close()
            raise

    async def aclose(self) -> None:
        """Close every idle connection; connections in use close when their exchange ends."""
        self._closed = True
        for home in self._origins.values():
            while home.idle:
                home.idle.popleft().close()


__all__ = [
    "ConnectFailed",
    "ConnectTimedOut",
    "ConnectionPool",
    "Exchange",
    "Origin",
    "OriginPool",
    "Plain",
    "PoolLimits",
    "PoolTimedOut",
    "ReadTimer",
    "RequestRejected",
    "ResponseCut",
    "ResponseTimedOut",
    "SendFailed",
    "Target",
    "TransportFailure",
    "parse_target",
]
