"""One upstream socket's reads and writes, plain TCP read straight from the socket.

Owns: `Connection`: a plain TCP or TLS stream to an origin; `send_now` (what the kernel
takes of a request at once, no trip through the scheduler), `receive` (the next bytes,
bounded by the pool's `ReadTimer`, a read first only after a full one, a checkpoint
every `_YIELD_EVERY` reads that did not wait), `close`, and `looks_closed` (an idle
connection the server closed).
"""

from __future__ import annotations

import os
import select

import trio

from adapters.providers.read_timer import ReadTimer

RECEIVE_BYTES = 65536
_YIELD_EVERY = 16


class Connection:
    __slots__ = ("armed", "drained", "entry", "entry_at", "idle_since", "now", "overdue", "sock",
                 "stream", "tcp", "timer", "unyielded")

    def __init__(self, stream: trio.abc.Stream, tcp: trio.SocketStream, timer: ReadTimer) -> None:
        self.stream = stream  # `tcp` itself, or TLS over it
        self.tcp = tcp
        self.sock = tcp.socket
        self.idle_since = 0.0
        self.unyielded = 0  # reads in a row that found bytes waiting (see `receive`)
        self.drained = True  # the last read took all there was (see `receive`)
        self.timer = timer  # bounds the waits of `receive` (ReadTimer)
        self.armed = 0.0  # the deadline of the wait under way (0: none; ReadTimer)
        self.entry = 0  # the timer's live heap entry for this connection (0: none)
        self.entry_at = 0.0  # and when it is due
        self.overdue = False  # a wait outlived its deadline: the connection is spent
        self.now = trio.lowlevel.current_clock().current_time  # this run's clock, read every wait

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
        if not self.drained:  # the last read filled its buffer: more may be there now
            await trio.lowlevel.checkpoint_if_cancelled()  # (the wait below is a checkpoint)
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
        if self.overdue or by <= self.now():
            await trio.lowlevel.checkpoint_if_cancelled()  # a cancellation comes first, as ever
            raise trio.TooSlowError
        self.timer.arm(self, by)
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
            self.armed = 0.0  # the wait is over: the timer's entry, when due, finds it so

    def close(self) -> None:
        """Close at once (no TLS close_notify: the connection is being dropped)."""
        self.timer.forget(self)
        self.sock.close()

    def looks_closed(self) -> bool:
        """An idle connection with something to read has been closed (or spoiled) by the server."""
        fd = self.sock.fileno()
        if fd < 0:
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
