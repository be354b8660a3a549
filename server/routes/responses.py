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

from adapters.execution import Execution
from core.errors import GatewayError
from core.model import GatewayRequest, StreamEvent
from core.sse import encode_comment, encode_event
from server.http import to_json
from server.pipeline import admit, stream_body, whole
from server.services import Services
from server.wire.responses import ResponsesStreamEncoder, parse_responses_request, response_object


def _frames(frames: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(encode_event(to_json(data), event=name) for name, data in frames)


class ResponsesFramer:
    keepalive = encode_comment("keep-alive")

    def __init__(self, exe: Execution, created_at: int) -> None:
        self.encoder = ResponsesStreamEncoder(
            response_id="resp_" + exe.request_id.removeprefix("req_"),
            created_at=created_at,
            request=exe.request,
        )

    def start(self, exe: Execution) -> bytes:
        return _frames(self.encoder.start())

    def event(self, exe: Execution, event: StreamEvent) -> bytes:
        return _frames(self.encoder.on_event(event))

    def finish(self, exe: Execution) -> bytes:
        return _frames(
            self.encoder.finish(
                usage=exe.answer_usage, gateway=exe.gateway_info(), finish_reason=exe.finish_reason
            )
        )

    def fail(self, exe: Execution, error: GatewayError) -> bytes:
        return _frames(self.encoder.fail(error))


def sse_response(body: Any, headers: dict[str, str]) -> Response:
    response = Response(
        body,
        content_type="text/event-stream; charset=utf-8",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no", **headers},
    )
    response.timeout = None  # Quart's RESPONSE_TIMEOUT would cut long streams
    return response


def _parse_streaming(body: dict[str, Any]) -> GatewayRequest:
    return evolve(parse_responses_request(body), stream=True)


def register(app: QuartTrio, services: Services) -> None:
    async def answer(exe: Execution) -> Response:
        created = int(services.clock.epoch())
        if exe.request.stream:
            framer = ResponsesFramer(exe, created)
            return sse_response(stream_body(services, exe, framer), exe.rate_headers)
        completion = await whole(services, exe)
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
        return await answer(await admit(services, "responses", parse_responses_request))

    @app.post("/v1/responses/stream")
    async def responses_stream() -> Response:
        return await answer(await admit(services, "responses", _parse_streaming))
