"""Streams out of the server: a run's events written as SSE, straight to ASGI `send`.

Owns: writing a `Streamed` answer (`server/pipeline.py`): the response head
(`text/event-stream; charset=utf-8`, `cache-control: no-cache`, `x-accel-buffering: no`
and the answer's headers, the rate headers), then each driver event framed by the
surface's framer and sent as it is emitted, from the driver's own task (no queue, no
extra task per chunk); the pieces one upstream read completed come together (`Pieces`)
and go out in one send. When `send` is Hypercorn's own (`FramingHTTPStream.app_send`,
the hot routes), a body part before the last goes through its `send_part`, the same
send without the ASGI message (`server/hypercorn_patch.py`). The last frame (after `Done` or `RunFailed`) ends the body.
- A stream with nothing to send for `keepalive` seconds gets an SSE comment: a timer
  task in the stream's nursery sends it, started by the process's `KeepAliveTicker`
  (server/keepalive.py) only once the stream has been that long silent (most streams
  never are: no task per stream), and never after the last frame (the flag is checked
  and the send made without a checkpoint in between, and the last frame sets it before
  its send).
- The client going away cancels the request (`server/hot.py`), so the driver sees it as
  client gone (upstream closed, usage settled, ledger row) -- unless the answer is
  recorded (`Streamed.recorder`) and `Detached` has room: then the run goes on to its
  end without sending (the events are still recorded, for a resume), the ledger row is
  the whole answer's, and the place is given back when it ends.
- A recorded stream always ends in its record: if the run was cut before its last
  frame, the surface's failure frames (client gone) are recorded, not sent.
- Shutdown does not go through here: every run is in the driver's `RunRegistry`
  (adapters/runs.py), whose `end_all` makes the run itself end with an explicit error,
  which arrives here as its last frame.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from adapters.events import Done, RunEvent, RunFailed
from adapters.runs import Detached
from core.errors import ClientClosed
from core.model import TextDelta
from server.hypercorn_patch import HEAD_WITH_BODY, body_part_sender
from server.keepalive import KeepAliveTicker
from server.pipeline import Streamed, frame

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Departure:
    """What the client's going away does: `leave()` cancels `scope`, unless `keep` (set by
    the stream being written) takes the run over and answers True. `last()` is called
    just before the answer's last send: from then on the client's going away is the
    answer's end (`disarm`: Hypercorn says `http.disconnect` then too, see
    server/hypercorn_tasks.py)."""

    def __init__(self, scope: trio.CancelScope, disarm: Callable[[], None] | None = None) -> None:
        self.scope = scope
        self.keep: Callable[[], bool] | None = None
        self._disarm = disarm
        self._last = False

    def leave(self) -> None:
        if self._last:
            return  # the answer is ending: nothing to stop (a cancel now would land in its last send)
        if self.keep is None or not self.keep():
            self.scope.cancel()

    def last(self) -> None:
        self._last = True
        if self._disarm is not None:
            self._disarm()

# In Quart's order: these, the answer's headers, then the type.
SSE_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
SSE_TYPE = (b"content-type", b"text/event-stream; charset=utf-8")
_FINAL = (Done, RunFailed)  # the events after which nothing is sent


async def send_stream(
    send: Send,
    answer: Streamed,
    *,
    keepalive: float,
    ticker: KeepAliveTicker,
    departure: Departure | None = None,
    detached: Detached | None = None,
    tail: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """`tail`: headers after all the others (the request id, `server/front.py`)."""
    run, framer = answer.run, answer.framer
    exe = run.exe
    extra = [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in answer.headers.items()]
    state = {"finished": False, "gone": False}
    fast = body_part_sender(send)
    now = trio.lowlevel.current_clock().current_time  # this run's clock itself: read every chunk

    async def as_message(chunk: bytes) -> None:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})

    part = fast or as_message  # a body part before the last, sent one way or the other

    def keep() -> bool:
        if detached is None or not detached.adopt():
            return False
        state["gone"] = True  # from here on nothing is sent, the run goes on
        return True

    if answer.recorder is not None and departure is not None:
        departure.keep = keep

    async def keepalives() -> None:  # started once the stream was `keepalive` s silent
        while True:
            if state["finished"] or state["gone"]:
                return
            if trio.current_time() >= watch.last + keepalive:
                watch.last = trio.current_time()
                await send({"type": "http.response.body", "body": framer.keepalive, "more_body": True})
            await trio.sleep_until(watch.last + keepalive)

    async def emit(event: RunEvent) -> None:
        if type(event) is TextDelta:  # nearly every event (`frame`'s first case), never the last
            chunk = framer.event(exe, event)
            if not chunk:
                return
            watch.last = now()
            if not state["gone"]:
                await part(chunk)
            return
        chunk = frame(framer, exe, event)
        final = isinstance(event, _FINAL)
        if not chunk and not final:
            return
        watch.last = now()
        state["finished"] = final
        if final and departure is not None:
            departure.last()
        if state["gone"]:
            return
        if final:
            await send({"type": "http.response.body", "body": chunk, "more_body": False})
        else:
            await part(chunk)

    try:
        # the opening frame follows at once (the driver emits `Started` first): the head
        # may go out with it, in one send (server/hypercorn_patch.py)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*SSE_HEADERS, *extra, SSE_TYPE, *tail], HEAD_WITH_BODY: True})
        async with trio.open_nursery() as nursery:
            watch = ticker.watch(keepalive, lambda: nursery.start_soon(keepalives))
            try:
                await run.drive(emit, together=True)
            finally:
                ticker.end(watch)
            nursery.cancel_scope.cancel()
        if not state["finished"] and not state["gone"]:  # the driver always ends with Done
            state["finished"] = True  # or RunFailed; be sure
            if departure is not None:
                departure.last()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        if departure is not None:
            departure.keep = None
        if state["gone"] and detached is not None:
            detached.release()
        if answer.recorder is not None:
            if not state["finished"]:
                framer.fail(exe, ClientClosed("The client closed the request before the answer ended"))
            answer.recorder.end()
        await run.close()
