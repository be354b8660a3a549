"""Streams out of the server: one producer task per stream, keep-alives, disconnects, drain.

Owns: turning a producer (the pipeline writing encoded chunks into a channel) into the
byte iterator a streaming response returns, with three guarantees:
- idle streams get a keep-alive chunk (an SSE comment) every `keepalive` seconds;
- when the client goes away, Quart closes the iterator and the producer is cancelled,
  which the pipeline sees as "client gone" (upstream closed, usage settled, ledger row);
- on shutdown, `StreamRegistry.end_all()` stops every producer's model stream; the
  producer then writes an explicit error event, so no stream ends silently.

The registry also holds the drain state: `begin_draining()` (the first step of a
shutdown) sets `draining` (so `/readyz` answers 503) and the `drain_started` event, which
WebSocket connections wait on to stop taking requests and close (`server/routes/ws.py`).
Their requests in flight are in the registry like SSE streams, so the same drain window
and `end_all()` apply to them.

The producer runs in the app's nursery, never in the response generator itself (a
nursery must not be held open across a `yield`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import trio

Producer = Callable[[trio.MemorySendChannel[bytes], trio.CancelScope], Awaitable[None]]


class StreamRegistry:
    """The model streams in flight, so shutdown can end them explicitly."""

    def __init__(self) -> None:
        self._scopes: set[trio.CancelScope] = set()
        self.draining = False
        self.drain_started = trio.Event()
        self.idle = trio.Event()
        self.idle.set()

    def begin_draining(self) -> None:
        """Shutdown's first step: not ready any more, no new WebSocket work."""
        self.draining = True
        self.drain_started.set()

    def add(self, scope: trio.CancelScope) -> None:
        self._scopes.add(scope)
        self.idle = trio.Event() if self.idle.is_set() else self.idle

    def discard(self, scope: trio.CancelScope) -> None:
        self._scopes.discard(scope)
        if not self._scopes:
            self.idle.set()

    def __len__(self) -> int:
        return len(self._scopes)

    def end_all(self) -> None:
        for scope in list(self._scopes):
            scope.cancel()


async def pump(
    nursery: trio.Nursery,
    registry: StreamRegistry,
    produce: Producer,
    *,
    keepalive: float,
    keepalive_chunk: bytes,
) -> AsyncIterator[bytes]:
    """Run `produce(send, model_scope)` in `nursery`; yield its chunks and keep-alives.

    `model_scope` wraps only the model stream inside the producer: cancelling it (at
    shutdown) lets the producer still write a closing error event.
    """
    send, recv = trio.open_memory_channel[bytes](32)
    task_scope = trio.CancelScope()
    model_scope = trio.CancelScope()
    registry.add(model_scope)

    async def run() -> None:
        try:
            with task_scope:
                async with send:
                    await produce(send, model_scope)
        finally:
            registry.discard(model_scope)

    nursery.start_soon(run)
    try:
        async with recv:
            while True:
                chunk = b""
                with trio.move_on_after(keepalive):
                    try:
                        chunk = await recv.receive()
                    except trio.EndOfChannel:
                        return
                yield chunk or keepalive_chunk
    finally:
        task_scope.cancel()
