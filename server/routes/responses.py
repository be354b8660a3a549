"""The unified API: `POST /v1/responses`, `POST /v1/responses/stream` and `GET /v1/responses/{id}`.

Owns: the unified surface, answered in the OpenAI Responses shape plus a `gateway`
object (provider, deployment, attempts, cost, routing). `"stream": true` on
`/v1/responses`, or the `/stream` path, answers with Responses SSE events; a failure after
the stream began ends with an `error` event and `response.failed`, never a clean end.

Resumable streams: every stream event carries `id: <sequence_number>`. Unless the
request says `"store": false` (or `[streams] buffer = false`), the stream is recorded
(adapters/stream_log.py) under its response id, and may go on after its client left
(server/streaming.py); a whole answer is stored as its one `response.completed` event.
`GET /v1/responses/{id}?stream=true` sends the events after
`starting_after=N` (or a `Last-Event-ID: N` header; core/resume.py), live while the
answer runs, from the buffer once it ended, from any gateway process on the same
database; `GET /v1/responses/{id}` answers the response object as it is now (the
finished one once it ended). Only the tenant that made the response can read it:
another tenant's id is a 404, like an unknown one; an expired buffer is a 410.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from attrs import evolve
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.routing import BaseConverter

from adapters.storage.streams import StoredEvent
from core import resume
from core.errors import GatewayError, InvalidRequest
from core.model import GatewayRequest
from core.sse import encode_comment, encode_event
from server.auth import require_key
from server.http import to_json
from server.pipeline import (
    Answer,
    Incoming,
    NamedEventFramer,
    Parser,
    Streamed,
    Whole,
    open_run,
)
from server.query import Query
from server.services import Services
from server.wire.responses import ResponsesStreamEncoder, parse_responses_request, response_object


def _parse_streaming(body: dict[str, Any]) -> GatewayRequest:
    return evolve(parse_responses_request(body), stream=True)


def _store(body: dict[str, Any]) -> bool:
    """The request's `store` (OpenAI's default: true)."""
    value = body.get("store")
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest("'store' must be true or false", param="store")
    return value is not False


async def _answer(services: Services, incoming: Incoming, parse: Parser) -> Answer:
    noted: dict[str, bool] = {}

    def parse_noting(body: dict[str, Any]) -> GatewayRequest:
        noted["store"] = _store(body)
        return parse(body)

    run = await open_run(services, incoming, "responses", parse_noting)
    exe = run.exe
    created = int(services.clock.epoch())
    response_id = "resp_" + exe.request_id.removeprefix("req_")
    store = noted.get("store", True) and services.settings.streams.buffer
    if exe.request.stream:
        recorder = services.stream_log.open(response_id, exe.key.tenant) if store else None
        framer = NamedEventFramer(
            ResponsesStreamEncoder(
                response_id=response_id,
                created_at=created,
                request=exe.request,
                request_id=incoming.client_request_id,
            ),
            ids=True,
            recorder=recorder,
        )
        return Streamed(run, framer, exe.rate_headers, recorder=recorder)
    completion = await run.collect()
    body = response_object(
        response_id=response_id,
        created_at=created,
        model=exe.request.model,
        completion=completion,
        status="completed",
        error=None,
        gateway=exe.gateway_info(),
        request=exe.request,
    )
    if store:  # kept like a stream's end, for GET /v1/responses/{id}
        recorder = services.stream_log.open(response_id, exe.key.tenant)
        done = {"type": "response.completed", "sequence_number": 0, "response": body}
        recorder.add(0, "response.completed", to_json(done))
        recorder.end()
    return Whole(to_json(body).encode(), exe.rate_headers)


async def responses(services: Services, incoming: Incoming) -> Answer:
    return await _answer(services, incoming, parse_responses_request)


async def responses_stream(services: Services, incoming: Incoming) -> Answer:
    return await _answer(services, incoming, _parse_streaming)


# Answered by server/hot.py (POST).
ROUTES = {"/v1/responses": responses, "/v1/responses/stream": responses_stream}


# -- GET /v1/responses/{id} ----------------------------------------------------------

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
# What the openai SDK's `responses.retrieve` may send; `include*` change nothing here.
RETRIEVE_QUERY = ("stream", "starting_after", "include", "include[]", "include_obfuscation")


def _latest_response(events: list[StoredEvent]) -> dict[str, Any] | None:
    """The response object of the latest event that carries one (the final one once the
    stream ended)."""
    for event in reversed(events):
        data = json.loads(event.data)
        if isinstance(data, dict) and isinstance(data.get("response"), dict):
            return dict(data["response"])
    return None


def _frames(events: list[StoredEvent]) -> bytes:
    return b"".join(encode_event(e.data, event=e.event, id=str(e.seq)) for e in events)


def _error_frame(err: GatewayError, seq: int) -> bytes:
    data = {"type": "error", "sequence_number": seq, "code": err.code, "message": err.message,
            "param": err.param}
    return encode_event(to_json(data), event="error")


class ResponseId(BaseConverter):
    """A response id in a path (`resp_...`), so `/v1/responses/stream` and `/ws` stay theirs."""

    regex = r"resp_[A-Za-z0-9]{1,64}"


def register(app: QuartTrio, services: Services) -> None:
    log = services.stream_log
    keepalive = services.settings.limits.keepalive_seconds
    app.url_map.converters["resp"] = ResponseId

    @app.get("/v1/responses/<resp:response_id>")
    async def retrieve(response_id: str) -> Response:
        key = await require_key(services)
        query = Query(request.args, RETRIEVE_QUERY)
        stream = query.choice("stream", ("true", "false")) == "true"
        query.choice("include_obfuscation", ("true", "false"))  # accepted, means nothing here
        after = resume.cursor(query.text("starting_after"), request.headers.get("last-event-id"))
        if not stream:  # (a cursor is checked, and means nothing, here)
            _, events = await log.read(key.tenant, response_id, resume.FROM_START)
            found = _latest_response(events)
            if found is None:
                raise InvalidRequest(f"Response '{response_id}' has not started yet", param="response_id")
            return Response(to_json(found), content_type="application/json")
        first = await log.read(key.tenant, response_id, after)  # 404 / 410 before any byte

        async def body() -> AsyncIterator[bytes]:
            last = after
            try:
                async for batch in log.tail(key.tenant, response_id, first, after, keepalive=keepalive):
                    if batch:
                        last = batch[-1].seq
                    yield _frames(batch) if batch else encode_comment("keep-alive")
            except GatewayError as err:  # the buffer expired or its process died meanwhile
                yield _error_frame(err, last + 1)

        return Response(body(), headers=SSE_HEADERS, content_type="text/event-stream; charset=utf-8")
