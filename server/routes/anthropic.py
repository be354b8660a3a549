"""The Anthropic façade: `POST /v1/messages` in Anthropic's wire format.

Owns: the Anthropic-compatible surface, so the official `anthropic` SDK works with
`base_url` pointed at the gateway. Auth by `x-api-key` or Bearer. Requests go through the
same core as every other surface, so any catalog model (OpenAI or Anthropic) can answer.
Errors use Anthropic's error shape (see `server.app.error_response`); a failure after the
stream began is sent as an `event: error`.
"""

from __future__ import annotations

from typing import Any

from quart import Response
from quart_trio import QuartTrio

from adapters.execution import Execution
from core.errors import GatewayError
from core.model import StreamEvent
from core.sse import encode_comment, encode_event
from server.http import to_json
from server.pipeline import admit, stream_body, whole
from server.routes.responses import sse_response
from server.services import Services
from server.wire.anthropic_messages import (
    AnthropicStreamEncoder,
    message_object,
    parse_messages_request,
)


def _frames(frames: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(encode_event(to_json(data), event=name) for name, data in frames)


class MessagesFramer:
    keepalive = encode_comment("keep-alive")

    def __init__(self, exe: Execution) -> None:
        self.encoder = AnthropicStreamEncoder(
            message_id="msg_" + exe.request_id.removeprefix("req_"),
            model=exe.request.model,
            input_tokens=exe.input_estimate,
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
        return _frames(self.encoder.error(error))


def register(app: QuartTrio, services: Services) -> None:
    @app.post("/v1/messages")
    async def messages() -> Response:
        exe = await admit(services, "messages", parse_messages_request)
        if exe.request.stream:
            return sse_response(stream_body(services, exe, MessagesFramer(exe)), exe.rate_headers)
        completion = await whole(services, exe)
        body = message_object(
            message_id="msg_" + exe.request_id.removeprefix("req_"),
            model=exe.request.model,
            completion=completion,
            gateway=exe.gateway_info(),
        )
        return Response(to_json(body), content_type="application/json", headers=exe.rate_headers)
