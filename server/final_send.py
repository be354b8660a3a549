"""`FinalSend`: the last send of an answer that went through the middlewares runs shielded.

Owns: one ASGI middleware, the outermost of the layered way in (`server/front.py`; the
unkeyed hot routes do not take that way, and need no shield: under Hypercorn nothing
cancels them during their last send, see `server/hypercorn_tasks.py`).

quart-trio cancels its request nursery as soon as the response is complete (and the
hot routes' disconnect watcher, on a keyed request, cancels its nursery when Hypercorn
says `http.disconnect` at the answer's end), and that cancellation can land inside
Hypercorn's `send` while it is still finishing the response: re-arming the connection's
idle timer (Hypercorn's own takes a lock there: a checkpoint). The connection was then never made readable or
idle again, so a kept-alive connection ignored `keep_alive_timeout` and was not closed
at shutdown: one idle client kept the process alive for the whole graceful timeout.
Shielding that one final send (with its own deadline) lets Hypercorn finish its
bookkeeping.
"""

from __future__ import annotations

import trio

from server.requestid import ASGIApp, Message, Receive, Scope, Send

# How long the last send of a response may take while shielded (it only writes the
# final chunk and hands the connection back to Hypercorn, normally microseconds).
FINAL_SEND_SECONDS = 5.0


class FinalSend:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def finishing_send(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True) as shielded:
                    shielded.deadline = trio.current_time() + FINAL_SEND_SECONDS
                    await send(message)
            else:
                await send(message)

        await self.app(scope, receive, finishing_send)
