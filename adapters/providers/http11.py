"""A pooled HTTP/1.1 client on h11 + trio: the engine under the provider transport.

Owns: connections to upstream origins (plain TCP or TLS), the bounded pool per origin,
one request/response exchange on a connection, and when a connection may be reused. It
knows nothing of providers or JSON; `transport.py` speaks through it.

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

import errno
import heapq
import math
import os
import re
import select
import socket
import ssl
from collections import deque
from urllib.parse import urlsplit

import h11
import trio
from attrs import frozen

from adapters.providers import chunked, head

RECEIVE_BYTES = 65536
HEAD_LIMIT = 64 * 1024  # a response head (status line and headers) longer than this is refused
_YIELD_EVERY = 16
_BLANK_LINE = re.compile(rb"\n\r?\n")  # the end of a head, as h11 finds it
_NET_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


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


@frozen
class Plain:
    """A POST request head that `head.py` encoded (`wire`); `target` and `fields` are kept
    for the exchange's h11 fallback, should the response head not be plain."""

    wire: bytes
    target: bytes
    fields: list[tuple[bytes, bytes]]

    def as_h11(self) -> h11.Request:
        return h11.Request(method=b"POST", target=self.target, headers=self.fields)


@frozen
class Origin:
    scheme: str  # "http" | "https"
    host: str
    port: int


@frozen
class Target:
    origin: Origin
    path: bytes  # path and query, as sent on the request line
    authority: bytes  # the Host header


def parse_target(url: str) -> Target:
    """The origin, request target and Host header of an http(s) URL (ValueError if not one)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {scheme!r} (expected http or https)")
    host = parts.hostname
    if not host:
        raise ValueError("the URL has no host")
    default = 443 if scheme == "https" else 80
    port = parts.port or default
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    shown = f"[{host}]" if ":" in host else host
    authority = shown if port == default else f"{shown}:{port}"
    return Target(Origin(scheme, host, port), path.encode("ascii"), authority.encode("idna"))


# ---- failures ----------------------------------------------------------------------------


class TransportFailure(Exception):
    """A failure in one phase of an exchange (`what`), with a detail that is safe to show."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"{what}: {detail}")
        self.what = what
        self.detail = detail


class ConnectFailed(TransportFailure):
    """Refused, reset, unreachable, DNS or TLS handshake/verification failure."""


class ConnectTimedOut(TransportFailure):
    pass


class PoolTimedOut(TransportFailure):
    """Every connection to the origin stayed busy until the connect deadline."""


class RequestRejected(TransportFailure):
    """Our own request could not be encoded (e.g. a header value with a line break)."""


class SendFailed(TransportFailure):
    pass


class ResponseTimedOut(TransportFailure):
    pass


class ResponseCut(TransportFailure):
    """The connection ended or broke, or the server broke HTTP, before the response ended."""


class _Stale(Exception):
    """The connection failed before any response byte; `failure` if it is not retried."""

    def __init__(self, failure: TransportFailure) -> None:
        super().__init__(str(failure))
        self.failure = failure


def _describe(exc: BaseException) -> str:
    """A short text for a network exception (the SSL reason for a broken TLS stream)."""
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


# ---- connections -------------------------------------------------------------------------


async def _open_tcp(host: str, port: int) -> trio.SocketStream:
    """A TCP connection to `host`: an IP address is connected to directly; a name goes
    through `trio.open_tcp_stream` (resolution, and happy eyeballs across its addresses),
    which costs a nursery and a task per connection, about three times the CPU."""
    try:
        numeric = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:  # a name, not an address
        return await trio.open_tcp_stream(host, port)
    family, kind, proto, _, address = numeric[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        await _connect(sock, address)
    except BaseException:
        sock.close()
        raise
    # sets TCP_NODELAY, as open_tcp_stream's streams have
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


async def _connect(sock: socket.socket, address: object) -> None:
    """Connect the non-blocking `sock`, asking Trio to wait only if the handshake is still
    going when `connect` returns. On loopback (a provider beside the gateway) it has
    always finished by then; Trio's own `connect` waits for the socket to turn writable
    all the same: a trip through the scheduler and an epoll registration, about 55 us of
    a new connection's 100 (docs/performance.md, branch `admit`)."""
    err = sock.connect_ex(address)  # type: ignore[arg-type]
    if err == errno.EINPROGRESS:
        try:
            sock.getpeername()  # established already (ENOTCONN while the SYN is out)
            return
        except OSError:
            await trio.lowlevel.wait_writable(sock)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err != 0:
        raise OSError(err, f"Error connecting to {address!r}: {os.strerror(err)}")


class ReadTimer:
    """The deadlines of one pool's waiting reads, enforced by one task (module rules).

    `arm(conn, by)` before a wait, `disarm(conn)` after it (in a `finally`). Entries are
    not removed from the heap when disarmed: an entry counts only while its sequence
    number is the connection's `armed`; the heap is rebuilt from the live ones when the
    dead outnumber them, so it stays bounded by the reads waiting at once."""

    __slots__ = ("_heap", "_live", "_run", "_seq", "_target", "_wake")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Connection]] = []
        self._seq = 0
        self._live = 0  # connections armed now
        self._run: object | None = None  # the Trio run whose task serves this timer
        self._wake: trio.CancelScope | None = None  # the task's sleep, until `_target`
        self._target = math.inf

    def arm(self, conn: _Connection, by: float) -> None:
        self._seq += 1
        seq = conn.armed = self._seq
        heapq.heappush(self._heap, (by, seq, conn))
        self._live += 1
        if len(self._heap) > 2 * self._live + 64:
            self._heap = [entry for entry in self._heap if entry[2].armed == entry[1]]
            heapq.heapify(self._heap)
        if by < self._target:  # earlier than the task sleeps (or no task in this run yet)
            run = trio.lowlevel.current_root_task()
            if run is not self._run:
                self._run = run
                self._target = by
                trio.lowlevel.spawn_system_task(self._serve, name="umg-upstream-read-timer")
            elif self._wake is not None:
                self._target = by
                self._wake.deadline = by

    @property
    def entries(self) -> int:
        """Entries in the heap, live or not (bounded: see the class docstring)."""
        return len(self._heap)

    def disarm(self, conn: _Connection) -> None:
        if conn.armed:
            conn.armed = 0
            self._live -= 1

    async def _serve(self) -> None:
        run = trio.lowlevel.current_root_task()
        heap = self._heap
        while self._run is run:
            heap = self._heap
            now = trio.current_time()
            while heap and (heap[0][2].armed != heap[0][1] or heap[0][0] <= now):
                _, seq, conn = heapq.heappop(heap)
                if conn.armed == seq:  # still waiting at its deadline: wake it
                    self.disarm(conn)
                    conn.overdue = True
                    fd = conn.sock.fileno()
                    if fd >= 0:
                        trio.lowlevel.notify_closing(fd)
            self._target = heap[0][0] if heap else math.inf
            with trio.CancelScope(deadline=self._target) as self._wake:
                await trio.sleep_forever()
            self._wake = None


class _Connection:
    __slots__ = ("armed", "drained", "idle_since", "overdue", "sock", "stream", "tcp",
                 "timer", "unyielded")

    def __init__(self, stream: trio.abc.Stream, tcp: trio.SocketStream, timer: ReadTimer) -> None:
        self.stream = stream  # `tcp` itself, or TLS over it
        self.tcp = tcp
        self.sock = tcp.socket
        self.idle_since = 0.0
        self.unyielded = 0  # reads in a row that found bytes waiting (see `receive`)
        self.drained = True  # the last read took all there was (see `receive`)
        self.timer = timer  # bounds the waits of `receive` (ReadTimer)
        self.armed = 0  # the timer's entry for the wait under way (0: none)
        self.overdue = False  # a wait outlived its deadline: the connection is spent

    def send_now(self, data: bytes) -> int:
        """Write what the kernel takes of `data` at once to a plain TCP connection (no trip
        through Trio's scheduler); the bytes written. 0 for TLS, and on any error: the
        caller sends the rest with `send_all`, which reports errors the ordinary way."""
        if self.stream is not self.tcp:
            return 0
        fd = self.sock.fileno()
        try:
            return os.write(fd, data) if fd >= 0 else 0
        except OSError:  # a full buffer (BlockingIOError), or an error send_all will raise
            return 0

    async def receive(self, by: float) -> bytes:
        """The next bytes from the server (b"" at EOF), waiting until `by` at most
        (`trio.TooSlowError`). On plain TCP the socket is read directly and Trio is asked
        only to wait for it to turn readable, bounded by the pool's `ReadTimer`. After a read that took less than its buffer
        (the socket was emptied: the usual case, a provider's chunks come apart) it waits
        at once, without a read that would only fail; after a full one it reads first, and
        bytes already there cost no trip through the scheduler (a real checkpoint every
        `_YIELD_EVERY` reads that did not wait, so a fast upstream cannot starve other
        tasks; a pending cancellation is delivered on every call). TLS goes through the
        stream's `receive_some`."""
        if self.stream is not self.tcp:
            with trio.fail_at(by):
                return bytes(await self.stream.receive_some(RECEIVE_BYTES))
        fd = self.sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the connection is closed")
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self.drained:  # the last read filled its buffer: more may be there now
            try:
                data = os.read(fd, RECEIVE_BYTES)
            except BlockingIOError:
                pass
            else:
                self.drained = len(data) < RECEIVE_BYTES
                self.unyielded += 1
                if self.unyielded >= _YIELD_EVERY:
                    self.unyielded = 0
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return data
        self.unyielded = 0
        if self.overdue or by <= trio.current_time():
            raise trio.TooSlowError
        timer = self.timer
        timer.arm(self, by)
        try:
            while True:
                try:
                    await trio.lowlevel.wait_readable(fd)
                except trio.ClosedResourceError:
                    if self.overdue:  # woken by the timer (ReadTimer)
                        raise trio.TooSlowError from None
                    raise
                try:
                    data = os.read(fd, RECEIVE_BYTES)
                except BlockingIOError:  # a spurious wake-up
                    continue
                self.drained = len(data) < RECEIVE_BYTES
                return data
        finally:
            timer.disarm(self)

    def close(self) -> None:
        """Close at once (no TLS close_notify: the connection is being dropped)."""
        self.sock.close()

    def looks_closed(self) -> bool:
        """An idle connection with something to read has been closed (or spoiled) by the server."""
        fd = self.sock.fileno()
        if fd < 0:
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))


def _head_end(buf: bytes) -> int:
    """Where the first head in `buf` ends (after its blank line), -1 if it is not all there."""
    if buf[:1] == b"\n":
        return 1
    if buf[:2] == b"\r\n":
        return 2  # an empty head: h11 refuses it
    match = _BLANK_LINE.search(buf)
    return match.end() if match else -1


@frozen
class _Head:
    status: int
    headers: list[tuple[bytes, bytes]]  # names lower-cased, as h11 gives them
    rest: bytes  # the bytes after the head: the start of the body
    keep: bool  # both sides allow the connection to be reused


class _OriginPool:
    __slots__ = ("idle", "slots")

    def __init__(self, limits: PoolLimits) -> None:
        self.slots = trio.Semaphore(limits.max_connections)
        self.idle: deque[_Connection] = deque()


class Exchange:
    """One response being read. `close()` must follow (idempotent; use `finally`)."""

    __slots__ = ("_body", "_conn", "_home", "_keep", "_pending", "_pool", "headers", "status")

    def __init__(
        self, pool: ConnectionPool, home: _OriginPool, conn: _Connection, head: _Head
    ) -> None:
        self._pool = pool
        self._home: _OriginPool | None = home
        self._conn: _Connection | None = conn
        self._pending = head.rest  # body bytes that came with the head
        self._keep = head.keep
        self._body = chunked.reader_for(head.status, head.headers)
        self.status = head.status
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in head.headers}

    async def receive(self, by: float, what: str) -> bytes:
        """The next piece of the body, b"" at its end; waits until `by` at most."""
        conn = self._conn
        body = self._body
        while conn is not None:
            if self._pending:
                data, self._pending = self._pending, b""
            else:
                try:
                    data = await conn.receive(by)
                except trio.TooSlowError:
                    self.close()
                    raise ResponseTimedOut(what, "timed out") from None
                except _NET_ERRORS as exc:
                    self.close()
                    raise ResponseCut(what, _describe(exc)) from None
                if not data:  # EOF: the end of a close-delimited body, else a cut
                    try:
                        body.end()
                    except chunked.BodyError as exc:
                        self.close()
                        raise ResponseCut(what, str(exc)) from None
                    self._finish(conn, reuse=False)
                    return b""
            try:
                piece = body.feed(data)
            except chunked.BodyError as exc:
                self.close()
                raise ResponseCut(what, f"the server broke HTTP/1.1 ({exc})") from None
            if body.done:  # back to the pool at once: the caller gets b"" next
                self._finish(conn, reuse=self._keep and not body.extra)
            if piece:
                return piece
            conn = self._conn
        return b""

    def _finish(self, conn: _Connection, *, reuse: bool) -> None:
        self._conn = None
        home = self._home
        if reuse and home is not None:
            self._pool.check_in(home, conn)
        else:
            conn.close()
        self._release()

    def close(self) -> None:
        """Leave the exchange; an unfinished connection is closed, never pooled."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._release()

    def _release(self) -> None:
        if self._home is not None:
            self._home.slots.release()
            self._home = None


class ConnectionPool:
    def __init__(self, limits: PoolLimits | None = None, ssl_context: ssl.SSLContext | None = None):
        self._limits = limits or PoolLimits()
        self._ssl_context = ssl_context
        self._origins: dict[Origin, _OriginPool] = {}
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
            home = self._origins.setdefault(target.origin, _OriginPool(self._limits))
        try:
            home.slots.acquire_nowait()  # a free slot (the usual case): no scheduler trip
        except trio.WouldBlock:
            await self._wait_for_slot(home, min(deadline, trio.current_time() + connect))
        try:
            conn = self._check_out(home)
            if conn is not None:
                try:
                    return Exchange(self, home, conn, await self._send(conn, head, body, first_byte, deadline))
                except _Stale:
                    pass  # closed by _send; go on with a fresh connection
            conn = await self._connect(target.origin, min(deadline, trio.current_time() + connect))
            try:
                response = await self._send(conn, head, body, first_byte, deadline)
            except _Stale as stale:
                raise stale.failure from None
            return Exchange(self, home, conn, response)
        except BaseException:
            home.slots.release()
            raise

    async def _wait_for_slot(self, home: _OriginPool, by: float) -> None:
        try:
            with trio.fail_at(by):
                await home.slots.acquire()
        except trio.TooSlowError:
            raise PoolTimedOut(
                "waiting for a free connection",
                f"all {self._limits.max_connections} connections to the upstream are busy",
            ) from None

    def _check_out(self, home: _OriginPool) -> _Connection | None:
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

    def check_in(self, home: _OriginPool, conn: _Connection) -> None:
        if self._closed:
            conn.close()
            return
        conn.idle_since = trio.current_time()
        home.idle.append(conn)
        while len(home.idle) > self._limits.max_idle:
            home.idle.popleft().close()

    async def _connect(self, origin: Origin, by: float) -> _Connection:
        tcp: trio.SocketStream | None = None
        try:
            with trio.fail_at(by):
                tcp = await _open_tcp(origin.host, origin.port)
                if origin.scheme != "https":
                    return _Connection(tcp, tcp, self._timer)
                tls = trio.SSLStream(
                    tcp, self._tls(), server_hostname=origin.host, https_compatible=True
                )
                await tls.do_handshake()
                return _Connection(tls, tcp, self._timer)
        except trio.TooSlowError:
            if tcp is not None:
                tcp.socket.close()
            raise ConnectTimedOut("connecting", "timed out") from None
        except _NET_ERRORS as exc:
            if tcp is not None:
                tcp.socket.close()
            raise ConnectFailed("connecting", _describe(exc)) from None
        except BaseException:
            if tcp is not None:
                tcp.socket.close()
            raise

    async def _send(
        self, conn: _Connection, head: Plain | h11.Request, body: bytes, first_byte: float, deadline: float
    ) -> _Head:
        """Send the request and read the response head; closes `conn` on any failure."""
        try:
            return await self._exchange_head(conn, head, body, first_byte, deadline)
        except BaseException:
            conn.close()
            raise

    async def _exchange_head(
        self, conn: _Connection, request: Plain | h11.Request, body: bytes, first_byte: float, deadline: float
    ) -> _Head:
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
        except _NET_ERRORS as exc:
            raise _Stale(SendFailed("sending the request", _describe(exc))) from None
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
                except _NET_ERRORS as exc:
                    cut = ResponseCut(what, _describe(exc))
                    if received:
                        raise cut from None
                    raise _Stale(cut) from None
                if not got:
                    if not received:
                        raise _Stale(ResponseCut(what, "the server closed the connection"))
                    raise ResponseCut(what, "the server closed the connection")
                received = True
                buf += got
                continue
            if state is None:
                plain = head.parse_response(buf[:end])
                if plain is not None:
                    status, headers, keep = plain
                    return _Head(status, headers, buf[end:], keep)
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
                return _Head(event.status_code, list(event.headers), buf,
                             keep=state.our_state is h11.DONE)
            # an InformationalResponse (1xx) is skipped: the next head follows

    async def aclose(self) -> None:
        """Close every idle connection; connections in use close when their exchange ends."""
        self._closed = True
        for home in self._origins.values():
            while home.idle:
                home.idle.popleft().close()


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
