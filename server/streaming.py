"""Streams out of the server: one producer task per stream, keep-alives, disconnects, drain.

Owns: turning a producer (the pipeline writing encoded chunks into a channel) into the
byte iterator a streaming response returns, with three guarantees:
- idle streams get a keep-alive chunk (an SSE comment) every `keepalive` seconds;
- when the client goes away, Quart closes the iterator and the producer is cancelled,
  which the pipeline sees as "client gone" (upstream closed, usage settled, ledger row);
- on shutdown, `StreamRegistry.end_all()` stops every producer's model stream; the
  producer then writes an explicit error event, so no stream ends silently.

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
        self.idle = trio.Event()
        self.idle.set()

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
