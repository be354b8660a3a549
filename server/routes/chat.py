"""OpenAI Chat Completions: `POST /v1/chat/completions` and the original `/v1/chat.completions`.

Owns: the OpenAI-compatible surface, so the official `openai` SDK works unchanged with
`base_url` pointed at the gateway. Streaming follows OpenAI's data-only SSE with a final
`data: [DONE]`; `stream_options.include_usage` adds the usage chunk. A failure after the
stream began is sent as `data: {"error": {...}}`, the HTTP error body with its request id
(the SDK raises on it), and the stream
ends without `[DONE]`.
"""

from __future__ import annotations

from adapters.execution import Execution
from core.errors import GatewayError
from core.model import StreamEvent, TextDelta
from core.sse import data_template, encode_comment, encode_event
from server.http import to_json
from server.json_codec import encode as encode_json
from server.pipeline import Answer, Incoming, Streamed, Whole, open_run
from server.services import Services
from server.wire.openai_chat import (
    ChatStreamEncoder,
    chat_completion,
    error_chunk,
    parse_chat_request,
)

# Stands for a chunk's text while its template is made (any text would do: the template
# is used only if this one occurs exactly once in the encoded chunk).
_TEXT_SLOT = "\u2063umg-text\u2063"


class ChatFramer:
    """A chat stream's bytes. A text chunk (nearly every event) is its precompiled
    template around the text's JSON (`core.sse.data_template`): the same bytes as
    encoding the whole chunk, property-tested in tests/server/test_chat_framer.py."""

    keepalive = encode_comment("keep-alive")

    def __init__(self, exe: Execution, created: int, include_usage: bool, request_id: str) -> None:
        self.request_id = request_id  # the id the client sees, in the error chunk
        self.encoder = ChatStreamEncoder(
            completion_id="chatcmpl-" + exe.request_id.removeprefix("req_"),
            created=created,
            model=exe.request.model,
            include_usage=include_usage,
        )
        self._text = data_template(to_json(self.encoder.text_chunk(_TEXT_SLOT)), to_json(_TEXT_SLOT))
        self._head, self._tail = (self._text.head, self._text.tail) if self._text else (b"", b"")

    def start(self, exe: Execution) -> bytes:
        return b"".join(encode_event(to_json(c)) for c in self.encoder.start())

    def event(self, exe: Execution, event: StreamEvent) -> bytes:
        if type(event) is TextDelta and self._text is not None and not self.encoder.done:
            text = event.text  # the template's render, inline
            return self._head + encode_json(text) + self._tail if text else b""
        return b"".join(encode_event(to_json(c)) for c in self.encoder.on_event(event))

    def finish(self, exe: Execution) -> bytes:
        chunks = self.encoder.finish(
            usage=exe.answer_usage, gateway=exe.gateway_info(), finish_reason=exe.finish_reason
        )
        return b"".join(encode_event(to_json(c)) for c in chunks) + encode_event("[DONE]")

    def fail(self, exe: Execution, error: GatewayError) -> bytes:
        return encode_event(to_json(error_chunk(error, self.request_id)))


async def answer(services: Services, incoming: Incoming) -> Answer:
    parsed: dict[str, bool] = {}

    def parse(body: dict[str, object]):  # type: ignore[no-untyped-def]
        request, include_usage = parse_chat_request(body)
        parsed["include_usage"] = include_usage
        return request

    run = await open_run(services, incoming, "chat.completions", parse)
    exe = run.exe
    created = int(services.clock.epoch())
    if exe.request.stream:
        framer = ChatFramer(
            exe, created, parsed.get("include_usage", False), incoming.client_request_id
        )
        return Streamed(run, framer, exe.rate_headers)
    completion = await run.collect()
    body = chat_completion(
        completion_id="chatcmpl-" + exe.request_id.removeprefix("req_"),
        created=created,
        model=exe.request.model,
        completion=completion,
        gateway=exe.gateway_info(),
    )
    return Whole(to_json(body).encode(), exe.rate_headers)


# Answered by server/hot.py (POST); `/v1/chat.completions` is the original spelling.
ROUTES = {"/v1/chat/completions": answer, "/v1/chat.completions": answer}
