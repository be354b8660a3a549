"""Request ids at ingress: every request gets one, every response says it.

Owns: the ASGI middleware (outermost) that gives each HTTP request and WebSocket
handshake its ids and adds `x-request-id` to every HTTP response, errors included, and
`ids`, which the unkeyed hot routes use instead (`server/front.py`, whose answers add the
header themselves, after their other headers, as the middleware does).
- `scope["umg.request_id"]`: the gateway's own id (`req_<24 hex>`), unique per request;
  it keys the ledger row and the budget reservations, so it is never taken from a client.
- `scope["umg.client_request_id"]`: the id the client sees: its own `x-request-id` when
  that is sane (1 to 128 characters of `A-Z a-z 0-9 . _ : -`), else the gateway's id. It
  is the `x-request-id` response header and the `request_id` of every error body. An
  insane one is ignored, not refused (the request is served under the gateway's id).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from adapters.driver import new_id

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID = "umg.request_id"
CLIENT_REQUEST_ID = "umg.client_request_id"
HEADER = b"x-request-id"
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def sane(value: str) -> bool:
    return _SANE.fullmatch(value) is not None


def ids(client_value: str | None) -> tuple[str, str]:
    """(the gateway's own id, the id the client sees) for a request whose `x-request-id`
    header is `client_value` (or absent)."""
    own = new_id("req")
    return own, client_value if client_value is not None and sane(client_value) else own


def _client_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == HEADER:
            return str(value.decode("latin-1"))
    return None


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        own, shown = ids(_client_id(scope))
        scope[REQUEST_ID] = own
        scope[CLIENT_REQUEST_ID] = shown
        header = (HEADER, shown.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != HEADER]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        await self.app(scope, receive, send_with_id)
