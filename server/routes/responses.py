"""The unified API: `POST /v1/responses` and `POST /v1/responses/stream`.

Owns: the unified surface, answered in the OpenAI Responses shape plus a `gateway`
object (provider, deployment, attempts, cost, routing). `"stream": true` on
`/v1/responses`, or the `/stream` path, answers with Responses SSE events; a failure after
the stream began ends with an `error` event and `response.failed`, never a clean end.
"""

from __future__ import annotations

from typing import Any

from attrs import evolve
from quart import Response
from quart_trio import QuartTrio

from adapters.driver import Run
from core.model import GatewayRequest
from server.http import to_json
from server.pipeline import NamedEventFramer, open_run, sse_response, stream_body
from server.services import Services
from server.wire.responses import ResponsesStreamEncoder, parse_responses_request, response_object


def _parse_streaming(body: dict[str, Any]) -> GatewayRequest:
    return evolve(parse_responses_request(body), stream=True)


def register(app: QuartTrio, services: Services) -> None:
    async def answer(run: Run) -> Response:
        exe = run.exe
        created = int(services.clock.epoch())
        if exe.request.stream:
            framer = NamedEventFramer(
                ResponsesStreamEncoder(
                    response_id="resp_" + exe.request_id.removeprefix("req_"),
                    created_at=created,
                    request=exe.request,
                )
            )
            return sse_response(stream_body(services, run, framer), exe.rate_headers)
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
        return Response(to_json(body), content_type="application/json", headers=exe.rate_headers)

    @app.post("/v1/responses")
    async def responses() -> Response:
        return await answer(await open_run(services, "responses", parse_responses_request))

    @app.post("/v1/responses/stream")
    async def responses_stream() -> Response:
        return await answer(await open_run(services, "responses", _parse_streaming))
