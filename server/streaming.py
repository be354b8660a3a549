"""Streams out of the server: one producer task per stream, keep-alives, disconnects.

Owns: turning a producer (a run's events framed into chunks, written into a channel)
into the byte iterator a streaming response returns, with these guarantees:
- the producer starts at once, in the app's nursery (not when the body is first read),
  so a run that was opened is always driven to its ledger row;
- idle streams get a keep-alive chunk (an SSE comment) every `keepalive` seconds;
- when the client goes away, Quart closes the iterator (or drops it unread: a finalizer
  does the same) and the producer is cancelled, which the driver sees as "client gone"
  (upstream closed, usage settled, ledger row).
Shutdown does not go through here: every run is in the driver's `RunRegistry`
(adapters/runs.py), whose `end_all` makes the run itself end with an explicit error.

The producer runs in the app's nursery, never in the response generator itself (a
nursery must not be held open across a `yield`).
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Awaitable, Callable

import trio

Producer = Callable[[trio.MemorySendChannel[bytes]], Awaitable[None]]


def pump(
    nursery: trio.Nursery,
    produce: Producer,
    *,
    keepalive: float,
    keepalive_chunk: bytes,
) -> AsyncIterator[bytes]:
    """Start `produce(send)` in `nursery` now; the iterator yields its chunks and keep-alives."""
    send, recv = trio.open_memory_channel[bytes](32)
    task_scope = trio.CancelScope()

    async def run() -> None:
        with task_scope:
            async with send:
                try:
                    await produce(send)
                except trio.BrokenResourceError:
                    pass  # the reader is gone: the driver recorded the run as client gone

    nursery.start_soon(run)

    async def chunks() -> AsyncIterator[bytes]:
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

    body = chunks()
    weakref.finalize(body, task_scope.cancel)  # dropped unread: stop the producer too
    return body
