"""The Anthropic façade: `POST /v1/messages` in Anthropic's wire format.

Owns: the Anthropic-compatible surface, so the official `anthropic` SDK works with
`base_url` pointed at the gateway. Auth by `x-api-key` or Bearer. Requests go through the
same core as every other surface, so any catalog model (OpenAI or Anthropic) can answer.
Errors use Anthropic's error shape (see `server.errors.error_body`); a failure after the
stream began is sent as an `event: error`.
"""

from __future__ import annotations

from server.http import to_json
from server.pipeline import Answer, Incoming, NamedEventFramer, Streamed, Whole, open_run
from server.services import Services
from server.wire.anthropic_messages import (
    AnthropicStreamEncoder,
    message_object,
    parse_messages_request,
)


async def messages(services: Services, incoming: Incoming) -> Answer:
    run = await open_run(services, incoming, "messages", parse_messages_request)
    exe = run.exe
    if exe.request.stream:
        framer = NamedEventFramer(
            AnthropicStreamEncoder(
                message_id="msg_" + exe.request_id.removeprefix("req_"),
                model=exe.request.model,
                input_tokens=exe.input_estimate,
            )
        )
        return Streamed(run, framer, exe.rate_headers)
    completion = await run.collect()
    body = message_object(
        message_id="msg_" + exe.request_id.removeprefix("req_"),
        model=exe.request.model,
        completion=completion,
        gateway=exe.gateway_info(),
    )
    return Whole(to_json(body).encode(), exe.rate_headers)


# Answered by server/hot.py (POST).
ROUTES = {"/v1/messages": messages}
