"""Two per-request tasks taken out of Hypercorn's connection: the idle timer and the
disconnect watch; and the connection's reads without a cancel scope each.

Owns: the connection's keep-alive timer, and how an app hears that its client went away
without a task of its own waiting for `http.disconnect` (`install()`, which
`server/serve.py` calls after the other Hypercorn patches).

- **The idle timer.** Hypercorn's `TCPServer` restarts its idle watcher after every
  response: a new task (`nursery.start`) and a `trio.Lock` taken twice per request
  (`TrioSingleTask.restart` and `stop`). Here each connection has ONE timer task for
  its whole life, waiting in a cancel scope whose deadline is moved: to now +
  `keep_alive_timeout` when the connection becomes idle, to never when a request
  starts. What it does is Hypercorn's: when the deadline passes, or the worker is
  terminating (shutdown) while the connection is idle, the connection is closed. A
  connection that is busy when the worker terminates is left to the protocol, which
  closes it after its answer, as Hypercorn's does (`H11Protocol._maybe_recycle`).
  When the connection stops reading (its client closed it, or reading failed) the
  timer ends at once (`IdleTimer.end`): the connection's task group then has nothing
  left to wait for, and Hypercorn closes the socket. Without that, a connection whose
  client closed it while it was busy (a stream's last bytes written straight to the
  socket, the client gone before the app's end was handled) kept its timer waiting
  with no deadline, its task, protocol, h11 state and buffers (about 70 objects) kept
  until shutdown; and one whose client closed it while idle stayed in CLOSE-WAIT for
  the whole `keep_alive_timeout` (75 s by default). RSS grew by ~15 MB per 1,000 slow
  streams, round after round (docs/performance.md).
- **The disconnect watch.** Hypercorn tells an app that its client went away only by
  putting `http.disconnect` in the request's receive channel, so an app that must stop
  when the client leaves needs a task blocked in `receive()` (the hot routes had one
  per request). Here every HTTP request's scope gets a `Departures` (`DEPARTURES`) that
  Hypercorn's put of `http.disconnect` sets, synchronously, before the message goes
  into the channel; an app can `arm` it with a callback instead of waiting on
  `receive()`. Hypercorn puts `http.disconnect` also when the answer is complete (the
  stream closes, the connection is kept alive), so an app disarms it before its last
  send. The message still goes into the channel, so any app that receives sees it.
- **No cancel scope per read.** Hypercorn's reader bounds every read by `read_timeout`
  in a `trio.fail_after`, a cancel scope entered and left per read even with no
  timeout (about 9 us); with none set (as `umg serve` runs it: it would cut SSE answers
  being written) the connection here reads without one, and does what Hypercorn's
  reader does with what it reads. A configured `read_timeout` goes through Hypercorn's.
  On plain TCP it waits for the socket to be readable and then reads it, instead of a
  read that fails (`EAGAIN`) once every request has been read (`_receive_plain`).
- **No schedule point for a message already there.** The request's receive queue is
  an `Inbox` of `max_app_queue_size` (what Hypercorn's memory channel was; the app run
  by Hypercorn's own task wrapper): a put into it while it has room, and the app's
  `receive()` of a message already queued, do not pass through Trio's scheduler (`send`
  and `receive` on a memory channel yield even when they need not wait, and a JSON
  request made five such round trips: the body and its end put by the connection task
  and received by the app, `http.disconnect` put at the end of the answer; at one
  request at a time each was a turn of Trio's run loop of its own), and making it costs
  a deque, not a channel's three objects (about 10 us a request). A full queue or an
  empty one waits as before (a queue of 0 holds one message).
  The scope's `QUEUED` is the inbox's take without the wait (`trio.WouldBlock` when
  nothing is queued), so a body already there is taken without a timeout's cancel
  scope (server/bodylimit.py).

Written against Hypercorn 0.18 (`hypercorn.trio.tcp_server.TCPServer`,
`hypercorn.trio.task_group.TaskGroup`, pinned in constraints.txt);
`tests/server/test_hypercorn_tasks.py` checks both on a real server.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import hypercorn.trio.run as hypercorn_run
import hypercorn.trio.tcp_server as hypercorn_tcp
import trio
from hypercorn.config import Config
from hypercorn.events import Closed, RawData
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.task_group import _handle as hypercorn_handle
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.typing import AppWrapper, ASGIReceiveEvent, ASGISendEvent, Scope

DEPARTURES = "umg.departures"  # the scope key of a request's `Departures`
# the scope key of the request's receive without a wait: the next message if one is
# queued, else `trio.WouldBlock` (server/bodylimit.py takes a body already there so)
QUEUED = "umg.queued"


class Departures:
    """Whether a request's client went away, and whom to tell at once."""

    def __init__(self) -> None:
        self.gone = False
        self._then: Callable[[], None] | None = None

    def arm(self, then: Callable[[], None]) -> None:
        """Call `then()` when the client goes away (at once if it is gone already)."""
        self._then = then
        if self.gone:
            self.disarm()
            then()

    def disarm(self) -> None:
        self._then = None

    def leave(self) -> None:
        """Hypercorn is about to put `http.disconnect` (the client went away, or the
        answer is complete): tell whoever armed this, once."""
        self.gone = True
        then, self._then = self._then, None
        if then is not None:
            then()


class DeparturesTaskGroup(TaskGroup):
    """Hypercorn's per-connection task group; each HTTP request's scope gets `DEPARTURES`."""

    async def spawn_app(
        self,
        app: AppWrapper,
        config: Config,
        scope: Scope,
        send: Callable[[ASGISendEvent | None], Awaitable[None]],
    ) -> Callable[[ASGIReceiveEvent], Awaitable[None]]:
        if scope["type"] != "http":
            return await super().spawn_app(app, config, scope, send)
        departures = Departures()
        scope[DEPARTURES] = departures  # type: ignore[literal-required]
        inbox = Inbox(config.max_app_queue_size)
        scope[QUEUED] = inbox.get_nowait  # type: ignore[literal-required]

        async def put_noticed(message: ASGIReceiveEvent) -> None:
            if message["type"] == "http.disconnect":
                departures.leave()
            await inbox.put(message)

        nursery = self._nursery
        assert nursery is not None, "spawn_app outside the task group"
        nursery.start_soon(hypercorn_handle, app, config, scope, inbox.get, send,
                           trio.to_thread.run_sync, trio.from_thread.run)
        return put_noticed


class Inbox:
    """A request's receive queue: what Hypercorn's memory channel of `max_app_queue_size`
    is to its app (bounded; one connection task puts, one app task takes), without the
    channel's objects, which cost about 10 us to make per request. A put with room, and a
    take of a message already queued, do not pass through Trio's scheduler; a put into a
    full queue waits until the app takes one, a take from an empty one until a put."""

    __slots__ = ("_items", "_size", "_taker", "_putter")

    def __init__(self, size: int) -> None:
        self._items: deque[ASGIReceiveEvent] = deque()
        self._size = max(size, 1)
        self._taker: trio.Event | None = None  # set by the next put (the app is waiting)
        self._putter: trio.Event | None = None  # set by the next take (the queue was full)

    async def put(self, message: ASGIReceiveEvent) -> None:
        while len(self._items) >= self._size:
            self._putter = waiting = trio.Event()
            await waiting.wait()
        self._items.append(message)
        taker, self._taker = self._taker, None
        if taker is not None:
            taker.set()

    async def get(self) -> ASGIReceiveEvent:
        while not self._items:
            self._taker = waiting = trio.Event()
            await waiting.wait()
        return self.get_nowait()

    def get_nowait(self) -> ASGIReceiveEvent:
        """The next message already queued (`trio.WouldBlock` when none is)."""
        if not self._items:
            raise trio.WouldBlock
        message = self._items.popleft()
        putter, self._putter = self._putter, None
        if putter is not None:
            putter.set()
        return message


class IdleTimer:
    """`TCPServer.idle_task`: `restart` and `stop` as Hypercorn calls them, one task per
    connection (see the module docstring)."""

    def __init__(self, server: TCPServer) -> None:
        self._server = server
        self._scope = trio.CancelScope()
        self._idle = False
        self._running = False
        self._ended = False

    async def restart(self, task_group: Any, action: object) -> None:
        """The connection is idle (Hypercorn's `action`, its own watcher, is not used)."""
        if self._ended:
            return  # it is closing: nothing to time
        self._idle = True
        self._scope.deadline = trio.current_time() + self._server.config.keep_alive_timeout
        if not self._running:
            self._running = True
            task_group.spawn(self._watch)

    async def stop(self) -> None:
        """A request began: no deadline while it is served."""
        self._idle = False
        self._scope.deadline = math.inf

    def end(self) -> None:
        """The connection stopped reading: the timer task ends now and is not started again
        (Hypercorn's reader has told the protocol already; `TCPServer.run` closes the socket
        once the connection's tasks are done)."""
        self._ended = True
        self._scope.cancel()

    async def _watch(self) -> None:
        try:
            with self._scope:
                await self._server.context.terminated.wait()
                if not self._idle:
                    return  # busy: the protocol closes the connection after its answer
            if self._ended:
                return
            with trio.CancelScope(shield=True):
                await self._server._initiate_server_close()
        finally:
            self._running = False
            self._scope = trio.CancelScope(deadline=self._scope.deadline)


class OneIdleTimer(TCPServer):
    """Hypercorn's connection with `IdleTimer` as its idle watcher."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._idle_timer = IdleTimer(self)
        self.idle_task = self._idle_timer  # type: ignore[assignment]

    async def _read_data(self) -> None:
        try:
            if self.config.read_timeout is None:
                await self._read_untimed()
            else:
                await super()._read_data()
        finally:
            self._idle_timer.end()  # no request can come any more: no keep-alive to time

    async def _read_untimed(self) -> None:
        """What Hypercorn's reader does when there is no `read_timeout` (as `umg serve`
        runs it), without entering a cancel scope with no deadline around every read. On
        plain TCP the socket is read straight (`_receive_plain`); TLS through its stream."""
        stream = self.stream
        plain = stream.socket if isinstance(stream, trio.SocketStream) else None
        while True:
            try:
                if plain is None:
                    data = bytes(await stream.receive_some(hypercorn_tcp.MAX_RECV))
                else:
                    data = await _receive_plain(plain)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                break
            await self.protocol.handle(RawData(data))
            if not data:
                break
        await self.protocol.handle(Closed())


async def _receive_plain(sock: trio.socket.SocketType) -> bytes:
    """The next bytes of a plain TCP connection (b"" at its end): wait until the socket is
    readable, then read it. Trio's `receive_some` reads first and waits only when that
    read fails, and after a request has been read there is nothing more to read (its
    client waits for the answer): at one request at a time that was one failed system
    call (`EAGAIN`, raised and caught) per request. Errors as `receive_some` gives them:
    the socket closed (here or by another task while waiting), ClosedResourceError; any
    other error of the read, BrokenResourceError."""
    while True:
        fd = sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the connection is closed")
        await trio.lowlevel.wait_readable(sock)  # ClosedResourceError if closed meanwhile
        try:
            return os.read(sock.fileno(), hypercorn_tcp.MAX_RECV)
        except BlockingIOError:  # woken with nothing to read after all: wait again
            continue
        except OSError as exc:
            if sock.fileno() < 0:
                raise trio.ClosedResourceError("the connection is closed") from exc
            raise trio.BrokenResourceError from exc


def install() -> None:
    """Give every connection Hypercorn's trio worker builds the one `IdleTimer` (on top of
    whatever connection class is installed already: call this after the other patches)
    and `DeparturesTaskGroup` (idempotent). Hypercorn looks both up by module-level name
    when a connection starts, so this replaces those names for the process."""
    current: type[TCPServer] = getattr(hypercorn_run, "TCPServer")  # noqa: B009 (not exported)
    if not issubclass(current, OneIdleTimer):
        timed: type[TCPServer] = type(f"OneIdleTimer{current.__name__}", (OneIdleTimer, current), {})
        setattr(hypercorn_run, "TCPServer", timed)  # noqa: B010
    setattr(hypercorn_tcp, "TaskGroup", DeparturesTaskGroup)  # noqa: B010
