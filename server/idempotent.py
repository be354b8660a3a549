"""`Idempotency-Key` on the model routes and `POST /v1/jobs`: one ASGI layer for all of them.

Owns: where a keyed request is claimed, recorded and replayed. It sits between the body
middleware and `server/hot.py`, so every keyed route (the five hot model routes, and
`/v1/jobs`, which hot.py passes on to Quart) goes through this one place, and what it
stores is exactly what the client got: the surface's own bytes (ids, framing, the
gateway block), which exist only after the driver's events were framed.

A POST with the header on one of `paths`:
1. the caller is authenticated and the body decoded. A request that fails either is
   passed on untouched: the route answers it (401, 400, 415: nothing is claimed). Then
   the key is checked (`core.idempotency.check_key`: a 400 naming `Idempotency-Key`);
2. the key is claimed for the caller's tenant with a fingerprint of the route and the
   canonical body (`adapters/idempotency.py`). A kept answer is replayed (status,
   headers, body chunks as first sent, plus `idempotent-replayed: true`): no provider
   call, no ledger row, no bill; the observers are told (`Observer.replayed`: a log
   line, a span, a counted replay) with the gateway's id of the request that got the
   answer, which is kept with it. Another body is a 422, a request still running a 409
   with `Retry-After`, a database that cannot be asked a 503;
3. the route runs with a recording `send`, and with `scope[WATCH]` set so the driver
   reports the run's record (what it cost, how it ended). The key is finished: kept
   (`core.idempotency.keeps`: answered whole, and billed or a success) just before the
   answer's last message goes out, as the ledger row is committed before it, so a retry
   sent the moment the answer arrives is replayed, not refused as still running (a
   client that leaves during that last send finds the answer kept); released when the
   run is over without such an answer. SSE keep-alive comments are not recorded (their timing is not the
   answer's).
Without the header the cost is a path lookup and a scan of the request's headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from decimal import Decimal
from typing import Any

import trio

from adapters.execution import Execution
from adapters.idempotency import Claim, IdempotencyKeys
from adapters.observe import Replayed
from adapters.storage.records import KeyRecord
from core import idempotency as idem
from core.errors import GatewayError
from server.hot import send_error
from server.http import api_key_in, check_content_type, decode_json
from server.pipeline import WATCH
from server.requestid import CLIENT_REQUEST_ID, REQUEST_ID
from server.services import Services

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER = b"idempotency-key"
REPLAYED = (b"idempotent-replayed", b"true")
# the surface a keyed path is (as the driver names its runs' endpoints); others: the path
SURFACES = {
    "/v1/chat/completions": "chat.completions", "/v1/chat.completions": "chat.completions",
    "/v1/responses": "responses", "/v1/responses/stream": "responses",
    "/v1/messages": "messages", "/v1/jobs": "jobs",
}
TRACE_HEADERS = (b"traceparent", b"tracestate")


def _surface(path: str) -> str:
    return SURFACES.get(path, path)


def _trace_headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            if k.lower() in TRACE_HEADERS}


def _header(scope: Scope, name: bytes) -> str | None:
    size = len(name)
    for key, value in scope["headers"]:
        if len(key) == size and key.lower() == name:  # the length check first: it is cheap
            return str(value.decode("latin-1"))
    return None


class _Recorder:
    """A `send` that passes every message on and keeps what makes the answer. Before the
    answer's last message goes out it calls `before_last` (see `Idempotent._run`)."""

    def __init__(self, send: Send, before_last: Callable[[], Awaitable[None]]) -> None:
        self._send = send
        self._before_last = before_last
        self.status = 500
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.started = False
        self.complete = False  # the answer's last message was given to `send`
        self._sse = False

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = int(message["status"])
            self.headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in message["headers"]]
            self._sse = any(n.lower() == "content-type" and v.startswith("text/event-stream")
                            for n, v in self.headers)
            self.started = True
        if kind != "http.response.body":
            await self._send(message)
            return
        chunk = bytes(message.get("body", b""))
        if chunk and not (self._sse and chunk.startswith(b":")):
            self.chunks.append(chunk)
        if message.get("more_body", False):
            await self._send(message)
            return
        self.complete = True
        await self._before_last()
        await self._send(message)

    def answer(self, request_id: str | None) -> idem.Answer:
        return idem.Answer(self.status, tuple(self.headers), tuple(self.chunks), request_id)


async def _whole_body(receive: Receive) -> tuple[list[Message], bool]:
    """The request's body messages (the body middleware has read them already), and
    whether the client is still there."""
    messages: list[Message] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return messages, False
        messages.append(message)
        if not message.get("more_body", False):
            return messages, True


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def again() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return again


async def _replay(send: Send, answer: idem.Answer) -> None:
    headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in answer.headers]
    await send({"type": "http.response.start", "status": answer.status,
                "headers": [*headers, REPLAYED]})
    chunks = answer.chunks or (b"",)
    for n, chunk in enumerate(chunks):
        await send({"type": "http.response.body", "body": chunk,
                    "more_body": n < len(chunks) - 1})


class IdempotentRoutes:
    """ASGI app: keyed POSTs on `paths` claimed, recorded and replayed; the rest to `app`."""

    def __init__(self, app: ASGIApp, services: Services, paths: frozenset[str],
                 keys: IdempotencyKeys) -> None:
        self.app = app
        self.services = services
        self.paths = paths
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        key = _header(scope, HEADER)
        if key is None:
            await self.app(scope, receive, send)
            return
        await self._keyed(scope, receive, send, key)

    async def _fingerprinted(self, scope: Scope, body: bytes) -> tuple[KeyRecord, str] | None:
        """(the caller, fingerprint), or None when the route should answer the request."""
        token = api_key_in({k.decode("latin-1").lower(): v.decode("latin-1")
                            for k, v in reversed(scope["headers"])})
        try:
            caller = await self.services.gateway.driver.authenticate(token)
            check_content_type(_header(scope, b"content-type"))
            decoded = decode_json(body)
        except GatewayError:  # the route answers it (401, 400, 415), nothing claimed
            return None
        return caller, idem.fingerprint(scope["path"], decoded)

    async def _keyed(self, scope: Scope, receive: Receive, send: Send, key: str) -> None:
        messages, present = await _whole_body(receive)
        if not present:
            return
        inner_receive = _replaying(messages, receive)
        client_id = scope.get(CLIENT_REQUEST_ID)
        found = await self._fingerprinted(scope, b"".join(m.get("body", b"") for m in messages))
        if found is None:
            await self.app(scope, inner_receive, send)
            return
        try:
            got = await self.keys.arrive(found[0].tenant, idem.check_key(key), found[1])
        except GatewayError as err:
            await send_error(send, scope["path"], client_id, err, err.status)
            return
        if isinstance(got, idem.Answer):
            self._tell_replayed(scope, found[0], got)  # before: the client may act on the answer
            await _replay(send, got)
            return
        await self._run(scope, inner_receive, send, got)

    def _tell_replayed(self, scope: Scope, caller: KeyRecord, answer: idem.Answer) -> None:
        observer = self.services.gateway.driver.observer
        if observer is None:
            return
        own = str(scope.get(REQUEST_ID) or "")
        observer.replayed(Replayed(
            request_id=own, client_request_id=str(scope.get(CLIENT_REQUEST_ID) or own),
            original_request_id=answer.request_id, endpoint=_surface(scope["path"]),
            key_prefix=caller.prefix, tenant=caller.tenant, project=caller.project,
            status=answer.status, trace_headers=_trace_headers(scope),
            at=self.services.clock.now(),
        ))  # fmt: skip

    async def _run(self, scope: Scope, receive: Receive, send: Send, claim: Claim) -> None:
        runs: list[Execution] = []
        finished = False

        def keep() -> bool:
            billed = any(exe.cost > Decimal(0) for exe in runs)
            failed = any(exe.outcome is not None and exe.outcome.status != "ok" for exe in runs)
            return idem.keeps(recorder.status, recorder.complete, billed, failed)

        async def finish(kept: bool) -> None:
            nonlocal finished
            finished = True
            with trio.CancelScope(shield=True):
                await self.keys.finish(claim, recorder.answer(scope.get(REQUEST_ID)), kept)

        async def before_last() -> None:
            # kept before the answer's last byte, as its ledger row is: a retry sent the
            # moment the answer arrives is replayed, not refused as still running
            if keep():
                await finish(True)

        recorder = _Recorder(send, before_last)
        try:
            await self.app({**scope, WATCH: runs.append}, receive, recorder.send)
        finally:
            if not finished:
                await finish(keep())
