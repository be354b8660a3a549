"""The Anthropic façade: `POST /v1/messages` in Anthropic's wire format.

Owns: the Anthropic-compatible surface, so the official `anthropic` SDK works with
`base_url` pointed at the gateway. Auth by `x-api-key` or Bearer. Requests go through the
same core as every other surface, so any catalog model (OpenAI or Anthropic) can answer.
Errors use Anthropic's error shape (see `server.errors.error_body`); a failure after the
stream began is sent as an `event: error`.

`POST /v1/messages/count_tokens` (a plain Quart route, `register`) answers
`{"input_tokens": N}` (Anthropic's shape) with the core's token estimate (`core.tokens`,
the figure rate limits and budgets reserve), not a provider's tokenizer count: it leans
high, and says so in `gateway.estimate: true`. It is not a model call: nothing is billed
or recorded, but the key is checked and the model must be in the catalog.
"""

from __future__ import annotations

from quart import Response
from quart_trio import QuartTrio

from core.tokens import estimate_request_tokens
from server.auth import require_key
from server.http import json_body, to_json
from server.pipeline import Answer, Incoming, NamedEventFramer, Streamed, Whole, open_run
from server.services import Services
from server.wire.anthropic_messages import (
    AnthropicStreamEncoder,
    message_object,
    parse_count_tokens_request,
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
                request_id=incoming.client_request_id,
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


def register(app: QuartTrio, services: Services) -> None:
    @app.post("/v1/messages/count_tokens")
    async def count_tokens() -> Response:
        await require_key(services)
        request = parse_count_tokens_request(await json_body())
        services.gateway.catalog.resolve(request.model)
        body = {"input_tokens": estimate_request_tokens(request), "gateway": {"estimate": True}}
        return Response(to_json(body), content_type="application/json")
