"""Streams out of the server: a run's events written as SSE, straight to ASGI `send`.

Owns: writing a `Streamed` answer (`server/pipeline.py`): the response head
(`text/event-stream; charset=utf-8`, `cache-control: no-cache`, `x-accel-buffering: no`
and the answer's headers, the rate headers), then each driver event framed by the
surface's framer and sent as it is emitted, from the driver's own task (no queue, no
extra task per chunk). The last frame (after `Done` or `RunFailed`) ends the body.
- A stream with nothing to send for `keepalive` seconds gets an SSE comment: a timer
  task sends it, and never after the last frame (the flag is checked and the send made
  without a checkpoint in between, and the last frame sets it before its send).
- The client going away cancels the request (`server/hot.py`), so the driver sees it as
  client gone (upstream closed, usage settled, ledger row).
- Shutdown does not go through here: every run is in the driver's `RunRegistry`
  (adapters/runs.py), whose `end_all` makes the run itself end with an explicit error,
  which arrives here as its last frame.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from adapters.events import Done, RunEvent, RunFailed
from server.pipeline import Streamed, frame

Send = Callable[[dict[str, Any]], Awaitable[None]]

# In Quart's order: these, the answer's headers, then the type.
SSE_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
SSE_TYPE = (b"content-type", b"text/event-stream; charset=utf-8")


async def send_stream(send: Send, answer: Streamed, *, keepalive: float) -> None:
    run, framer = answer.run, answer.framer
    exe = run.exe
    extra = [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in answer.headers.items()]
    state = {"last": trio.current_time(), "finished": False}

    async def keepalives() -> None:
        while True:
            await trio.sleep_until(state["last"] + keepalive)
            if state["finished"]:
                return
            if trio.current_time() >= state["last"] + keepalive:
                state["last"] = trio.current_time()
                await send({"type": "http.response.body", "body": framer.keepalive, "more_body": True})

    async def emit(event: RunEvent) -> None:
        chunk = frame(framer, exe, event)
        final = isinstance(event, Done | RunFailed)
        if not chunk and not final:
            return
        state["last"] = trio.current_time()
        state["finished"] = final
        await send({"type": "http.response.body", "body": chunk, "more_body": not final})

    try:
        await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *extra, SSE_TYPE]})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keepalives)
            await run.drive(emit)
            nursery.cancel_scope.cancel()
        if not state["finished"]:  # the driver always ends with Done or RunFailed; be sure
            state["finished"] = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        await run.close()
