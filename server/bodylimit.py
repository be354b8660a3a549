"""An ASGI middleware that reads every request body before the app sees it, within limits.

Owns: what a request body may cost the server. Three limits, each answered in the route's
error shape (`server/errors.py`: Anthropic's on `/v1/messages`, with the request id, as
every error body) and `connection: close` (so the server closes the connection instead of
reading on):
- size: more than `max_bytes` is a 413, refused on `Content-Length` before anything is
  read, or as soon as a chunked body passes it. (Quart's own `MAX_CONTENT_LENGTH` leaves
  the connection half-read, so the next request on it hangs; see stack notes.)
- time: the whole body must arrive within `timeout` seconds of the request head, or the
  answer is a 408. A body trickled in a byte at a time no longer holds a connection.
- memory: `BodyBudget` bounds the bytes of bodies being received at once, across every
  connection. A body is charged its `Content-Length` before its first byte is read
  (chunked bodies chunk by chunk); one that does not fit gets a 503 with `retry-after: 1`
  at once (it does not wait: a waiting body would hold its connection and the client's
  time for nothing). The charge is released once the app has taken the body.
Requests without a body (no `Content-Length`, or 0, and no `Transfer-Encoding`) and
WebSocket connections pass straight through. A body read here is also put in the scope
(`BODY`), so a layer behind can take it without a receive (`server/hot.py`); the app's
receive still hands it over once, as before. The unkeyed hot routes do not take this
middleware: `server/front.py` calls `BodyLimit.take`, the same limits and refusals, and
gets the body back (on those routes a request without a body is read too: its one empty
message).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

from core.errors import GatewayError, PayloadTooLarge, RequestTimeout, ServiceUnavailable
from server.errors import error_body
from server.hypercorn_tasks import QUEUED
from server.requestid import CLIENT_REQUEST_ID

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BODY = "umg.body"  # scope key: the whole request body, read by BodyLimit


class BodyBudget:
    """Bytes of request bodies held at once by one server, across its connections."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


class _Refused(Exception):
    def __init__(self, error: GatewayError) -> None:
        self.error = error


async def _answer(scope: Scope, send: Send, error: GatewayError,
                  tail: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = json.dumps(error_body(error, scope["path"], scope.get(CLIENT_REQUEST_ID))).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if error.retry_after is not None:
        headers.append((b"retry-after", str(int(error.retry_after)).encode()))
    headers.extend(tail)
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _declared(scope: Scope) -> tuple[int | None, bool]:
    """(Content-Length, whether a Transfer-Encoding was given); h11 has checked both."""
    length: int | None = None
    chunked = False
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int, timeout: float, budget: BodyBudget) -> None:
        self.app = app
        self.limit = limit
        self.timeout = timeout
        self.budget = budget

    def _too_large(self) -> _Refused:
        return _Refused(
            PayloadTooLarge(f"Request body is larger than the limit of {self.limit} bytes")
        )

    def _busy(self) -> _Refused:
        return _Refused(
            ServiceUnavailable(
                "The gateway is receiving too many request bodies at once; retry shortly",
                retry_after=1.0,
            )
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, chunked = _declared(scope)
        if not chunked and not length:
            await self.app(scope, receive, send)
            return
        charge = _Charge(self.budget)
        try:
            body = await self._within(receive, charge, length)
            if body is None:
                return  # the client went away
            scope[BODY] = body
            await self.app(scope, _replay(body, receive, charge), send)
        except _Refused as refused:
            await _answer(scope, send, refused.error)
        finally:
            charge.release()

    async def take(self, scope: Scope, receive: Receive, send: Send, length: int | None,
                   tail: tuple[tuple[bytes, bytes], ...]) -> bytes | None:
        """The whole body within the limits, taken by the caller at once (the hot routes,
        `server/front.py`, which have read the request's `Content-Length`: `length`); or
        None when it was refused (answered here, with the `tail` headers) or the client
        went away. A request without a body gives b"" (after its one empty message)."""
        charge = _Charge(self.budget)
        try:
            return await self._within(receive, charge, length, scope.get(QUEUED))
        except _Refused as refused:
            await _answer(scope, send, refused.error, tail)
            return None
        finally:
            charge.release()

    async def _within(self, receive: Receive, charge: _Charge, length: int | None,
                      queued: Callable[[], Message] | None = None) -> bytes | None:
        """The whole body, charged to the budget and within the time allowed (or None if
        the client went away); `_Refused` when a limit is passed. With `queued` (the
        request's receive without a wait, `hypercorn_tasks.QUEUED`) the messages queued
        already are taken first: a body that is all there needs no timeout, so no cancel
        scope; the time allowed for the rest starts when it has to be waited for."""
        if length is not None and length > self.limit:
            raise self._too_large()
        if length is not None and not charge.grow(length):
            raise self._busy()
        chunks: list[bytes] = []
        if queued is not None:
            while True:
                try:
                    message = queued()
                except trio.WouldBlock:
                    break
                end = self._add(message, charge, chunks)
                if end is not False:
                    return b"".join(chunks) if end else None
        with trio.move_on_after(self.timeout) as deadline:
            body = await self._read(receive, charge, chunks)
        if deadline.cancelled_caught:
            raise _Refused(
                RequestTimeout(f"The request body did not arrive within {self.timeout:g} seconds")
            )
        return body

    async def _read(self, receive: Receive, charge: _Charge, chunks: list[bytes] | None = None) -> bytes | None:
        """The whole body (after `chunks`, taken already), or None if the client went away."""
        chunks = [] if chunks is None else chunks
        while True:
            end = self._add(await receive(), charge, chunks)
            if end is not False:
                return b"".join(chunks) if end else None

    def _add(self, message: Message, charge: _Charge, chunks: list[bytes]) -> bool | None:
        """One received message's part of the body added to `chunks`: True at the body's
        end, False when more is to come, None when the client went away."""
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        charge.seen += len(chunk)
        if charge.seen > self.limit:
            raise self._too_large()
        if charge.seen > charge.size and not charge.grow(charge.seen - charge.size):
            raise self._busy()  # chunked: charged as it comes
        chunks.append(chunk)
        return not message.get("more_body", False)


class _Charge:
    """What one body holds of the budget; `release` is idempotent."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.size = 0
        self.seen = 0  # bytes of the body received so far

    def grow(self, size: int) -> bool:
        if not self.budget.take(size):
            return False
        self.size += size
        return True

    def release(self) -> None:
        self.budget.give(self.size)
        self.size = 0


def _replay(body: bytes, receive: Receive, charge: _Charge) -> Receive:
    """The body as one message; its charge is released as the app takes it."""
    pending = [body]

    async def replay() -> Message:
        if pending:
            charge.release()
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return replay
