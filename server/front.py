"""The gateway's ASGI entry (`app.asgi_app`): the hot model routes in one call chain, the
rest through the middlewares.

Owns: which way a request goes in. An unkeyed `POST` on a hot path (no
`Idempotency-Key`) is answered by one coroutine that does, in order, what the layers do
for every other request, with no send wrapper, receive wrapper or closure per layer:
1. its ids (`server/requestid.ids`, from the headers read once here); the answer's
   writer adds `x-request-id` itself, after the answer's other headers, as
   `RequestIds` does;
2. its body, within the size, time and memory limits (`BodyLimit.take`, the same
   refusals);
3. the route (`HotRoutes.answer`), which is told of the client going away by
   Hypercorn without a task of its own (`server/hypercorn_tasks.py`).
Everything else goes through the middlewares, outermost first: `RequestIds` ->
`BodyLimit` -> `IdempotentRoutes` -> `HotRoutes` -> `FinalSend` -> Quart. A keyed request
on a hot path takes that way too: `IdempotentRoutes` records the answer through a send
of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from server.bodylimit import BodyLimit
from server.hot import HotRoutes, request_headers
from server.idempotent import HEADER as IDEMPOTENCY_HEADER
from server.requestid import CLIENT_REQUEST_ID, REQUEST_ID, ids
from server.requestid import HEADER as REQUEST_ID_HEADER

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_KEYED = IDEMPOTENCY_HEADER.decode("latin-1")
_CLIENT_ID = REQUEST_ID_HEADER.decode("latin-1")


class Front:
    def __init__(self, layered: ASGIApp, hot: HotRoutes, limit: BodyLimit) -> None:
        self.layered = layered
        self.hot = hot
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.hot.routes.get(scope["path"])
            if handler is not None:
                headers = request_headers(scope)
                if _KEYED not in headers:
                    await self._hot(handler, scope, headers, receive, send)
                    return
        await self.layered(scope, receive, send)

    async def _hot(self, handler: Any, scope: Scope, headers: dict[str, str],
                   receive: Receive, send: Send) -> None:
        own, shown = ids(headers.get(_CLIENT_ID))
        scope[REQUEST_ID] = own
        scope[CLIENT_REQUEST_ID] = shown
        tail = ((REQUEST_ID_HEADER, shown.encode("ascii")),)
        length = headers.get("content-length")  # h11 has checked it is a number
        size = None if length is None else int(length)
        body = await self.limit.take(scope, receive, send, size, tail)
        if body is not None:  # else refused (answered) or the client went away
            await self.hot.answer(handler, scope, headers, body, receive, send, tail)
