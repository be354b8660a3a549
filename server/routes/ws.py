"""WebSocket `GET /v1/responses/ws`: many unified requests over one connection.

Owns: the WebSocket surface. Auth at the handshake (see `server.auth`: headers, the
`umg-key.<key>` subprotocol browsers can send, or `?api_key=`); a bad key closes with
code 4401 before anything else. Then the client sends JSON text frames:

  {"type": "response.create", "id": "<client id>", "request": {<unified request>},
   "idempotency_key"?: "<key>"}
  {"type": "response.cancel", "id": "<client id>"}

and receives, for each request, the same events as `/v1/responses/stream` as JSON text
frames, each with `"id": "<client id>"` added, ending with `response.completed`,
`response.incomplete`, `response.failed`, or `response.cancelled` (after a cancel).
Requests run concurrently; a bad message gets an `error` frame naming the problem and
the connection stays open. Every `error` frame carries a `request_id`: the request's own
(`req_...`, which keys its ledger row) for a request that was created, else the
handshake's (the id the client sent as `x-request-id`, or the gateway's). Closing the socket cancels every request in flight (the
ledger records what each consumed).

Shutdown (`server/serve.py`): each request in flight is in the stream registry like an
SSE stream. Once draining begins, a new handshake is refused (HTTP 503) and a
`response.create` on an open connection gets an `error` frame (`service_unavailable`);
requests in flight get the drain window to finish, then are ended with `error`
(`service_unavailable`) and `response.failed`, their ledger rows recorded; when a
connection has nothing left in flight it is closed with code 1001 (going away).

`idempotency_key` on a `response.create`: a repeat (same tenant, key and request, on
any connection or process) replays the frames first sent, marked
`"idempotent_replayed": true`, without calling a provider or billing again
(server/ws_idempotency.py).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import trio
from attrs import evolve
from quart import Response, websocket
from quart_trio import QuartTrio

from adapters.driver import Ingress, Run, new_id
from adapters.events import Done, RunEvent, RunFailed, Started
from adapters.idempotency import Claim, IdempotencyKeys
from adapters.storage.records import KeyRecord
from core.errors import (
    AuthenticationFailed,
    ClientClosed,
    GatewayError,
    InvalidJSON,
    InvalidRequest,
    ServiceUnavailable,
    UpgradeRequired,
)
from core.model import GatewayRequest, TextDelta, ToolCallDelta
from server import ws_idempotency
from server.auth import WS_KEY_PROTOCOL, require_key, websocket_key
from server.errors import error_body, error_headers
from server.http import decode_json, to_json
from server.requestid import CLIENT_REQUEST_ID
from server.services import Services
from server.wire.responses import ResponsesStreamEncoder, parse_responses_request

CLOSE_UNAUTHORIZED = 4401
CLOSE_GOING_AWAY = 1001
CANCELLED = "The client cancelled the request"
REFUSED_DRAINING = "The gateway is shutting down; connect again (to another instance)"


async def _send(frame: dict[str, Any], client_id: str | None) -> None:
    if client_id is not None:
        frame = {**frame, "id": client_id}
    await websocket.send(to_json(frame))


async def _error(err: GatewayError, client_id: str | None, request_id: str | None) -> None:
    # The same shape as the stream's `error` event (the body's own `type` must not win).
    frame = {
        "type": "error",
        "code": err.code,
        "message": err.message,
        "param": err.param,
        "request_id": request_id,
    }
    await _send(frame, client_id)


class Connection:
    def __init__(
        self, services: Services, key: KeyRecord, nursery: trio.Nursery, request_id: str | None
    ) -> None:
        self.services = services
        self.keys = IdempotencyKeys(services.storage, services.clock, services.settings.idempotency)
        self.request_id = request_id  # the handshake's, in errors about the connection's messages
        self.key = key
        self.nursery = nursery
        self.running: dict[str, Run | None] = {}  # None: not yet opened
        self.cancelled: set[str] = set()
        # Request tasks not yet finished (their last frame included) and an event set
        # whenever there are none, so a draining connection knows when it may close.
        self.tasks = 0
        self.quiet = trio.Event()
        self.quiet.set()

    def _task_started(self) -> None:
        if self.tasks == 0:
            self.quiet = trio.Event()
        self.tasks += 1

    def _task_done(self) -> None:
        self.tasks -= 1
        if self.tasks == 0:
            self.quiet.set()

    async def close_when_drained(self) -> None:
        """At shutdown: once no request is in flight, close with 1001 and stop reading."""
        await self.services.streams.drain_started.wait()
        await self.quiet.wait()
        await websocket.close(CLOSE_GOING_AWAY, "server shutting down")
        self.nursery.cancel_scope.cancel()

    async def handle(self, raw: str | bytes) -> None:
        try:
            message = decode_json(raw.encode() if isinstance(raw, str) else raw)
        except InvalidJSON as err:
            await _error(err, None, self.request_id)
            return
        client_id = message.get("id")
        kind = message.get("type")
        if not isinstance(client_id, str) or not client_id:
            await _error(InvalidRequest("Every message needs a string 'id'", param="id"), None, self.request_id)
        elif kind == "response.create":
            if client_id in self.running:
                await _error(InvalidRequest(f"A request with id '{client_id}' is running", param="id"),
                             client_id, self.request_id)
                return
            if self.services.streams.draining:
                await _error(ServiceUnavailable(REFUSED_DRAINING), client_id, self.request_id)
                return
            key: str | None = None
            if "idempotency_key" in message:
                try:
                    key = ws_idempotency.checked(message["idempotency_key"])
                except GatewayError as err:
                    await _error(err, client_id, self.request_id)
                    return
            self.running[client_id] = None
            self._task_started()
            self.nursery.start_soon(self.run, client_id, message.get("request"), key)
        elif kind == "response.cancel":
            if client_id not in self.running:
                await _error(InvalidRequest(f"No running request with id '{client_id}'", param="id"),
                             client_id, self.request_id)
            else:
                self.cancelled.add(client_id)
                run = self.running[client_id]
                if run is not None:
                    run.cancel(ClientClosed(CANCELLED))
        else:
            await _error(
                InvalidRequest("'type' must be response.create or response.cancel", param="type"),
                client_id,
                self.request_id,
            )

    async def run(self, client_id: str, body: Any, key: str | None = None) -> None:
        try:
            if key is None:
                await self._run(client_id, body, None)
            else:
                await self._keyed(client_id, body, key)
        finally:
            self.running.pop(client_id, None)
            self.cancelled.discard(client_id)
            self._task_done()

    async def _keyed(self, client_id: str, body: Any, key: str) -> None:
        """A keyed request: replayed, refused (422 / 409 / 503) or run and recorded."""
        try:
            got = await ws_idempotency.arrive(self.keys, self.key.tenant, key, body)
        except GatewayError as err:
            await _error(err, client_id, self.request_id)
            return
        if not isinstance(got, Claim):
            for frame in got:
                await _send(ws_idempotency.replayed(frame), client_id)
            return
        frames: list[dict[str, Any]] = []
        runs: list[Run] = []
        try:
            await self._run(client_id, body, frames, runs)
        finally:
            exe = runs[0].execution if runs else None
            billed = exe is not None and exe.cost > Decimal(0)
            failed = exe is None or (exe.outcome is not None and exe.outcome.status != "ok")
            with trio.CancelScope(shield=True):
                await ws_idempotency.finish(self.keys, got, frames, billed=billed, failed=failed)

    async def _run(
        self, client_id: str, body: Any, recorded: list[dict[str, Any]] | None,
        runs: list[Run] | None = None,
    ) -> None:
        """Run one request; its frames also go to `recorded` (a keyed request's)."""
        parsed: list[GatewayRequest] = []

        async def parse() -> GatewayRequest:
            if not isinstance(body, dict):
                raise InvalidRequest("'request' must be an object holding a unified request", param="request")
            # Every answer on the socket is streamed, whatever the body's `stream` says.
            parsed.append(evolve(parse_responses_request(body), stream=True))
            return parsed[0]

        ingress = Ingress(request_id=new_id("req"), endpoint="responses.ws", parse=parse, key=self.key)
        run = self.services.gateway.driver.run(ingress)
        if runs is not None:
            runs.append(run)
        encoder: ResponsesStreamEncoder | None = None

        def encoder_for(request: GatewayRequest) -> ResponsesStreamEncoder:
            return ResponsesStreamEncoder(
                response_id="resp_" + run.request_id.removeprefix("req_"),
                created_at=int(self.services.clock.epoch()),
                request=request,
                request_id=run.request_id,
            )

        try:
            await run.open()
        except GatewayError as err:
            if not parsed:  # a bad request: no response was ever started
                await _error(err, client_id, run.request_id)
                return
            encoder = encoder_for(parsed[0])
            await self._frames([*encoder.start(), *encoder.fail(err)], client_id, recorded)
            return
        self.running[client_id] = run
        if client_id in self.cancelled:
            run.cancel(ClientClosed(CANCELLED))
        encoder = encoder_for(run.exe.request)
        exe = run.exe

        async def emit(event: RunEvent) -> None:
            assert encoder is not None
            if isinstance(event, Started):
                frames = encoder.start()
            elif isinstance(event, TextDelta | ToolCallDelta):
                frames = encoder.on_event(event)
            elif isinstance(event, Done):
                frames = encoder.finish(
                    usage=exe.answer_usage, gateway=exe.gateway_info(), finish_reason=exe.finish_reason
                )
            elif isinstance(event, RunFailed) and client_id in self.cancelled:
                cancelled = {"type": "response.cancelled", "response_id": encoder.response_id}
                await self._frames([("", cancelled)], client_id, recorded)
                return
            elif isinstance(event, RunFailed):
                frames = encoder.fail(event.error)
            else:
                return
            await self._frames(frames, client_id, recorded)

        try:
            await run.drive(emit)
        finally:
            await run.close()

    async def _frames(
        self, frames: list[tuple[str, dict[str, Any]]], client_id: str,
        recorded: list[dict[str, Any]] | None,
    ) -> None:
        for _name, data in frames:
            await _send(data, client_id)
            if recorded is not None:  # (once sent: a replay is what the client got)
                recorded.append(data)


def _handshake_id() -> str | None:
    """The request id of the handshake (`server/requestid.py`), as the client sees it."""
    value = websocket.scope.get(CLIENT_REQUEST_ID)
    return value if isinstance(value, str) else None


def _answer_subprotocol() -> str:
    """The subprotocol to answer with: `umg` if offered, else the offered key protocol.

    RFC 6455 lets the server pick only a subprotocol the client offered (hypercorn raises
    otherwise, and browsers fail the handshake if none comes back), so a client that sent
    only `umg-key.<key>` gets that echoed; one that sent `umg` as well gets `umg`.
    """
    offered = websocket.requested_subprotocols
    if "umg" in offered:
        return "umg"
    return next(p for p in offered if p.startswith(WS_KEY_PROTOCOL))


def register(app: QuartTrio, services: Services) -> None:
    @app.get("/v1/responses/ws")
    async def responses_ws_over_http() -> Response:
        """A plain GET (no WebSocket handshake): the key is checked, then 426."""
        await require_key(services)
        needed = UpgradeRequired(
            "This endpoint speaks WebSocket: send the GET with 'Upgrade: websocket'"
        )
        needed.headers["upgrade"] = "websocket"
        raise needed

    @app.websocket("/v1/responses/ws")
    async def responses_ws() -> Response | None:
        if services.streams.draining:
            # Before accept: the client gets a plain HTTP 503 and can go elsewhere.
            refused = ServiceUnavailable(REFUSED_DRAINING)
            return Response(
                to_json(error_body(refused, websocket.path, _handshake_id())),
                status=refused.status,
                headers=error_headers(refused),
                content_type="application/json",
            )
        token, via_protocol = websocket_key()
        subprotocol = _answer_subprotocol() if via_protocol else None
        try:
            key = await services.gateway.authenticate(token)
        except AuthenticationFailed:
            # Accept, then close: a close before accept is a bare HTTP 403, and browsers
            # cannot see why; the 4401 close code they can.
            await websocket.accept(subprotocol=subprotocol)
            await websocket.close(CLOSE_UNAUTHORIZED, "invalid or missing API key")
            return None
        await websocket.accept(subprotocol=subprotocol)
        async with trio.open_nursery() as nursery:
            connection = Connection(services, key, nursery, _handshake_id())
            nursery.start_soon(connection.close_when_drained)
            while True:
                raw = await websocket.receive()
                await connection.handle(raw)
        return None



