"""The unified API: `POST /v1/responses` and `POST /v1/responses/stream`.

Owns: the unified surface, answered in the OpenAI Responses shape plus a `gateway`
object (provider, deployment, attempts, cost, routing). `"stream": true` on
`/v1/responses`, or the `/stream` path, answers with Responses SSE events; a failure after
the stream began ends with an `error` event and `response.failed`, never a clean end.
"""

from __future__ import annotations

from typing import Any

from attrs import evolve

from core.model import GatewayRequest
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
from server.services import Services
from server.wire.responses import ResponsesStreamEncoder, parse_responses_request, response_object


def _parse_streaming(body: dict[str, Any]) -> GatewayRequest:
    return evolve(parse_responses_request(body), stream=True)


async def _answer(services: Services, incoming: Incoming, parse: Parser) -> Answer:
    run = await open_run(services, incoming, "responses", parse)
    exe = run.exe
    created = int(services.clock.epoch())
    if exe.request.stream:
        framer = NamedEventFramer(
            ResponsesStreamEncoder(
                response_id="resp_" + exe.request_id.removeprefix("req_"),
                created_at=created,
                request=exe.request,
                request_id=incoming.client_request_id,
            )
        )
        return Streamed(run, framer, exe.rate_headers)
    completion = await run.collect()
    body = response_object(
        response_id="resp_" + exe.request_id.removeprefix("req_"),
        created_at=created,
        model=exe.request.model,
        completion=completion,
        status="completed",
        error=None,
        gateway=exe.gateway_info(),
        request=exe.request,
    )
    return Whole(to_json(body).encode(), exe.rate_headers)


async def responses(services: Services, incoming: Incoming) -> Answer:
    return await _answer(services, incoming, parse_responses_request)


async def responses_stream(services: Services, incoming: Incoming) -> Answer:
    return await _answer(services, incoming, _parse_streaming)


# Answered by server/hot.py (POST).
ROUTES = {"/v1/responses": responses, "/v1/responses/stream": responses_stream}
