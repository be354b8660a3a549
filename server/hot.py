"""The hot model routes, answered at the ASGI level in front of Quart.

Owns: `POST` on `/v1/chat/completions`, `/v1/chat.completions`, `/v1/responses`,
`/v1/responses/stream` and `/v1/messages` without Quart's request and response objects.
Each route's handler (`answer(services, incoming)` in `server/routes/`) gets a plain
`Incoming` and returns a `Whole` or a `Streamed` answer (`server/pipeline.py`), which this
module writes as ASGI messages; both go through the one request driver. Everything else,
other paths and other methods on these paths (OPTIONS, the 405s), goes to the Quart app.
Two ways in, with the same ids, body limits and error answers as every other route:
`answer`, called by `server/front.py` for an unkeyed request with its ids assigned and
its whole body read (the request id header is added to the answer's head here); or this
class as an ASGI app inside the request-id, body and idempotency middlewares (a keyed
request), taking the body the body middleware has read (`server/bodylimit.py`'s `BODY`
in the scope) with no wait.

It does what Quart-Trio did for these routes (the e2e tests are the spec):
- a body not read already is received by a task of the request while it is handled, as
  quart-trio's connection does; a handler that needs it waits up to `body_timeout` (the
  app's `BODY_TIMEOUT`), then the answer is a 408 and there is no ledger row;
- `http.disconnect` cancels the request, whole or streamed: the driver sees the client
  gone (upstream closed, usage settled, ledger row); a recorded stream may instead be
  detached and go on to its end (`server/streaming.py`). Under `serve()` Hypercorn tells
  it at once (`server/hypercorn_tasks.Departures`, no task); otherwise a task of the
  request receives until the disconnect. Either way it is disarmed before the answer's
  last send (`Departure.last`: Hypercorn says `http.disconnect` at the end of every
  answer too);
- a refusal before the first byte is the error shape of `server/errors.py` (Anthropic's
  on `/v1/messages`) with the request id the client sees; an unexpected exception is
  logged with a reference and answered as a 500 that names only the reference;
- streams are written by `server/streaming.py`;
- every answer, errors included, carries `x-gateway-overhead-ms` (adapters/stopwatch.py:
  the request's stopwatch starts here, and the driver stops it at the ledger row).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import trio
from attrs import evolve

from adapters.afterwards import Afterwards
from adapters.driver import new_id
from adapters.stopwatch import OVERHEAD_HEADER, Stopwatch, header_value
from core.errors import GatewayError, InvalidRequest
from server.bodylimit import BODY
from server.errors import error_body, error_headers, internal_error
from server.http import to_json
from server.hypercorn_tasks import DEPARTURES, Departures
from server.keepalive import KeepAliveTicker
from server.pipeline import WATCH, BodyTimeout, Incoming, Streamed, Whole
from server.requestid import CLIENT_REQUEST_ID, REQUEST_ID
from server.services import Services
from server.streaming import Departure, send_stream

log = logging.getLogger("umg.server")

Scope = Mapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Any, Receive, Send], Awaitable[None]]
Handler = Callable[[Services, Incoming], Awaitable[Whole | Streamed]]

JSON = (b"content-type", b"application/json")
# What Quart answers when a body does not arrive in time (werkzeug's RequestTimeout).
BODY_TIMEOUT_MESSAGE = (
    "The server closed the network connection because the browser didn't finish the"
    " request within the specified time."
)


class _Body:
    """The request body as it arrives, for a handler that may wait for it (or read
    already, by the body middleware: `given`)."""

    def __init__(self, timeout: float | None, given: bytes | None) -> None:
        self.parts: list[bytes] = [] if given is None else [given]
        self.given = given is not None
        # set when the body has arrived (none for a body given: there is nothing to wait for)
        self.complete: trio.Event | None = None if self.given else trio.Event()
        self.timeout = timeout

    async def read(self) -> bytes:
        if self.complete is None:  # given: no wait, no cancel scope
            return self.parts[0]
        with trio.move_on_after(self.timeout if self.timeout is not None else float("inf")):
            await self.complete.wait()
            return b"".join(self.parts)
        raise BodyTimeout()


def request_headers(scope: Scope) -> dict[str, str]:
    """Header names lower-cased; of a repeated header the first value counts (as Quart's)."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return found


def _encode(headers: Mapping[str, object]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), str(value).encode("latin-1")) for name, value in headers.items()]


async def send_whole(send: Send, status: int, body: bytes, headers: Mapping[str, object],
                     tail: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        # Quart's order: the answer's own headers, then the type and the length (then the
        # request id, as server/requestid.py adds it).
        "headers": [*_encode(headers), JSON, (b"content-length", str(len(body)).encode()), *tail],
    })
    await send({"type": "http.response.body", "body": body, "more_body": False})


class HotRoutes:
    """ASGI app: `routes` (path -> handler) answered here on POST, the rest by `app`.

    As an ASGI app it is the layered way in (a keyed request, server/idempotent.py, comes
    here through the middlewares); `answer` is the direct one (`server/front.py`)."""

    def __init__(self, app: ASGIApp, services: Services, routes: Mapping[str, Handler],
                 *, body_timeout: float | None) -> None:
        self.app = app
        self.services = services
        self.routes = routes
        self.body_timeout = body_timeout
        self.keepalives = KeepAliveTicker()  # SSE keep-alives of its streams (server/keepalive.py)

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        handler = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        given = scope.get(BODY)
        body = _Body(self.body_timeout, given if isinstance(given, bytes) else None)
        own = str(scope.get(REQUEST_ID) or new_id("req"))
        incoming = Incoming(
            path=scope["path"],
            headers=request_headers(scope),
            read_body=body.read,
            request_id=own,
            client_request_id=str(scope.get(CLIENT_REQUEST_ID) or own),
            watch=scope.get(WATCH),
            stopwatch=Stopwatch(self.services.clock.now()),
        )
        await self._watched(handler, incoming, scope, body, receive, send, ())

    async def answer(self, handler: Handler, scope: Any, headers: Mapping[str, str], body: bytes,
                     receive: Receive, send: Send, tail: tuple[tuple[bytes, bytes], ...]) -> None:
        """Answer a request whose ids are in `scope` and whose whole `body` has been read,
        adding the `tail` headers (the request id) to every answer's head."""
        given = _Body(self.body_timeout, body)
        own = scope[REQUEST_ID]
        afterwards = Afterwards()  # the run's work after its row, done after the last byte
        incoming = Incoming(
            path=scope["path"],
            headers=headers,
            read_body=given.read,
            request_id=own,
            client_request_id=scope[CLIENT_REQUEST_ID],
            stopwatch=Stopwatch(self.services.clock.now()),
            afterwards=afterwards,
        )
        try:
            departures = scope.get(DEPARTURES)
            if not isinstance(departures, Departures):  # not under Hypercorn with its patch
                await self._watched(handler, incoming, scope, given, receive, send, tail)
                return
            with trio.CancelScope() as cancel:  # no task: Hypercorn's put of the disconnect cancels
                departure = Departure(cancel, departures.disarm)
                departures.arm(departure.leave)
                try:
                    await self._answer(handler, incoming, send, departure, tail)
                finally:
                    departures.disarm()
        finally:
            with trio.CancelScope(shield=True):  # however the answer ended
                await afterwards.run()

    async def _watched(self, handler: Handler, incoming: Incoming, scope: Any, body: _Body,
                       receive: Receive, send: Send, tail: tuple[tuple[bytes, bytes], ...]) -> None:
        """`_answer`, with a task receiving the body (unless given) and `http.disconnect`."""
        async with trio.open_nursery() as nursery:
            departure = Departure(nursery.cancel_scope)
            nursery.start_soon(self._receive, departure, body, receive)
            await self._answer(handler, incoming, send, departure, tail)
            nursery.cancel_scope.cancel()

    @staticmethod
    async def _receive(departure: Departure, body: _Body, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.request":
                if body.given:
                    continue  # the body middleware's replay of what `given` holds
                body.parts.append(message.get("body", b""))
                if not message.get("more_body", False) and body.complete is not None:
                    body.complete.set()
            elif message["type"] == "http.disconnect":
                departure.leave()  # the client went away: stop answering (or detach)
                return

    async def _answer(self, handler: Handler, incoming: Incoming, send: Send,
                      departure: Departure, tail: tuple[tuple[bytes, bytes], ...]) -> None:
        try:
            answer = await handler(self.services, incoming)
        except GatewayError as err:
            departure.last()
            await self._error(send, incoming, err, err.status, tail)
            return
        except BodyTimeout:
            departure.last()
            await self._error(send, incoming, InvalidRequest(BODY_TIMEOUT_MESSAGE), 408, tail)
            return
        except Exception:  # logged with its traceback, answered as a 500 (as Quart's handler)
            ref = secrets.token_hex(6)
            log.exception("unhandled error (ref %s) on POST %s", ref, incoming.path)
            departure.last()
            await self._error(send, incoming, internal_error(ref), 500, tail)
            return
        headers = {**answer.headers, **self._overhead(incoming)}
        if isinstance(answer, Whole):
            departure.last()
            await send_whole(send, 200, answer.body, headers, tail)
        else:
            answer = evolve(answer, headers=headers)
            await send_stream(
                send,
                answer,
                keepalive=self.services.settings.limits.keepalive_seconds,
                ticker=self.keepalives,
                departure=departure,
                detached=self.services.detached,
                tail=tail,
            )

    def _overhead(self, incoming: Incoming) -> dict[str, str]:
        """`x-gateway-overhead-ms`: the gateway's time on this request (adapters/stopwatch.py)."""
        assert incoming.stopwatch is not None
        return {OVERHEAD_HEADER: header_value(incoming.stopwatch.overhead_ms(self.services.clock.now()))}

    async def _error(self, send: Send, incoming: Incoming, err: GatewayError, status: int,
                     tail: tuple[tuple[bytes, bytes], ...]) -> None:
        await send_error(
            send, incoming.path, incoming.client_request_id, err, status, self._overhead(incoming), tail
        )


async def send_error(send: Send, path: str, client_id: str | None, err: GatewayError,
                     status: int, extra: Mapping[str, str] | None = None,
                     tail: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """`err` as a whole answer in the error shape of `path` (with `extra` headers)."""
    body = to_json(error_body(err, path, client_id)).encode()
    await send_whole(send, status, body, {**error_headers(err), **(extra or {})}, tail)
