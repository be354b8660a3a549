"""OpenAI Chat Completions codec: GatewayRequest -> request JSON; response JSON and the
chunk stream -> Completion / StreamEvents. Pure functions and one small decoder class.

Owns: every field mapping between the core's vocabulary and `POST /v1/chat/completions`
(reference: wire-formats.md section 1), for OpenAI itself and OpenAI-compatible servers.

Rules:
- The length limit goes in `max_tokens_field`: `max_completion_tokens` for OpenAI,
  `max_tokens` for compatible servers (many know only that one).
- `parallel_tool_calls` is sent only with tools (OpenAI rejects it otherwise); `user`,
  `stop`, `temperature`, `top_p`, `response_format` pass through; gateway `metadata` is
  never forwarded. Streams ask for `stream_options.include_usage`.
- The length limit is at most the deployment's `max_output_tokens`.
- `passthrough["openai_chat"]` fields (top-level, and per tool inside `function`, e.g.
  `strict`) are sent as they came, never over a field set above; other families' are
  dropped.
- Usage: `input_tokens` = prompt_tokens - cached_tokens - cache_write_tokens (the core's
  `input_tokens` excludes both); reasoning tokens are reported separately.
- Only choice 0 is read. `function_call` finishes map to `tool_calls`, unknown ones to
  `stop`. A refusal is surfaced as text.
- Stream: one SSE `data:` payload per chunk; `[DONE]` ends it. The finish reason is
  held until `[DONE]` so the usage chunk (sent after it) comes before `StreamEnd`.
  A payload with an `error` key raises ProviderError (kind from its code/type); an
  unparsable payload raises STREAM_CUT. At EOF without `[DONE]`: with `require_done`
  STREAM_CUT, otherwise a seen finish reason still ends the stream cleanly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from adapters.providers import payload
from adapters.providers.base import ProviderError
from adapters.providers.failures import error_from_payload
from adapters.providers.payload import UsageShape, event_object
from core.catalog import Deployment
from core.model import (
    Completion,
    FailureKind,
    FinishReason,
    GatewayRequest,
    ImagePart,
    Message,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageReport,
)

FINISH_REASONS: Mapping[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


# ---- request -------------------------------------------------------------------------------


FAMILY = "openai_chat"


def _content(message: Message) -> str | list[dict[str, Any]]:
    if all(isinstance(p, TextPart) for p in message.content):
        return message.text()
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            image: dict[str, Any] = {"url": part.url}
            if part.detail is not None:
                image["detail"] = part.detail
            parts.append({"type": "image_url", "image_url": image})
    return parts


def encode_message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role}
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id or ""
        out["content"] = message.text()
        return out
    if message.role == "assistant":
        text = message.text()
        out["content"] = text if text or not message.tool_calls else None
        if message.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in message.tool_calls
            ]
    elif message.role == "system":
        out["content"] = message.text()
    else:
        out["content"] = _content(message)
    if message.name is not None:
        out["name"] = message.name
    return out


def encode_request(
    deployment: Deployment, request: GatewayRequest, *, stream: bool,
    max_tokens_field: str = "max_completion_tokens",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": deployment.upstream_model,
        "messages": [encode_message(m) for m in request.messages],
    }
    if request.max_output_tokens is not None:
        body[max_tokens_field] = min(request.max_output_tokens, deployment.max_output_tokens)
    optional: dict[str, Any] = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "response_format": request.response_format,
        "user": request.user,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if request.stop:
        body["stop"] = list(request.stop)
    if request.tools:
        body["tools"] = [
            _tool(t.name, t.description, t.parameters, t.passthrough.get(FAMILY, {}))
            for t in request.tools
        ]
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.tool_choice is not None:
        choice = request.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}}
            if choice.mode == "tool" else choice.mode
        )
    extra = request.passthrough.get(FAMILY, {})
    body.update({k: v for k, v in extra.items() if k not in body})
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _tool(
    name: str, description: str | None, parameters: object, extra: Mapping[str, Any]
) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if description is not None:
        function["description"] = description
    if parameters is not None:
        function["parameters"] = parameters
    function.update({k: v for k, v in extra.items() if k not in function})
    return {"type": "function", "function": function}


# ---- response ------------------------------------------------------------------------------


USAGE = UsageShape(
    input=("prompt_tokens",),
    output=("completion_tokens",),
    cached=("prompt_tokens_details", "cached_tokens"),
    cache_write=("prompt_tokens_details", "cache_write_tokens"),
    reasoning=("completion_tokens_details", "reasoning_tokens"),
    input_includes_cache=True,
)


def decode_usage(usage: object) -> Usage:
    return payload.decode_usage(usage, USAGE)


def finish_reason(value: object) -> FinishReason:
    return FINISH_REASONS.get(value, "stop") if isinstance(value, str) else "stop"


def _first_choice(data: Mapping[str, Any]) -> dict[str, Any] | None:
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return None


def decode_response(data: Mapping[str, Any]) -> Completion:
    """A chat.completion object -> Completion. Raises ValueError if it has no choice."""
    choice = _first_choice(data)
    if choice is None:
        raise ValueError("the response has no choices")
    message = choice.get("message") or {}
    text = message.get("content") or message.get("refusal") or ""
    calls = tuple(
        ToolCall(
            id=str(c.get("id", "")),
            name=str((c.get("function") or {}).get("name", "")),
            arguments=str((c.get("function") or {}).get("arguments", "")),
        )
        for c in message.get("tool_calls") or ()
        if isinstance(c, dict)
    )
    return Completion(
        text=text if isinstance(text, str) else "",
        finish_reason=finish_reason(choice.get("finish_reason")),
        usage=decode_usage(data.get("usage")),
        tool_calls=calls,
        upstream_model=data.get("model") if isinstance(data.get("model"), str) else None,
        upstream_id=data.get("id") if isinstance(data.get("id"), str) else None,
    )


# ---- stream --------------------------------------------------------------------------------


class ChunkDecoder:
    """SSE events of one chat-completion stream -> StreamEvents (see the module rules)."""

    def __init__(
        self, provider: str = "openai", *, secrets: Iterable[str | None] = (),
        require_done: bool = True,
    ) -> None:
        self._provider = provider
        self._secrets = tuple(secrets)
        self._require_done = require_done
        self._finish: FinishReason | None = None
        self.done = False

    def on_event(self, event: str, data: str) -> list[StreamEvent]:
        if self.done:
            return []
        if data.strip() == "[DONE]":
            self.done = True
            return [StreamEnd(self._finish or "stop")]
        chunk = event_object(self._provider, data)
        if chunk.get("error") is not None:
            raise error_from_payload(self._provider, chunk, secrets=self._secrets)
        try:
            return self._chunk(chunk)
        except (TypeError, ValueError, AttributeError):
            raise ProviderError(
                FailureKind.STREAM_CUT, f"{self._provider} sent a malformed chunk"
            ) from None

    def _chunk(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        choices = chunk.get("choices")  # `_first_choice`, inline (once per chunk)
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if choice is not None:
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("refusal")
            if isinstance(text, str) and text:
                out.append(TextDelta(text))
            for call in delta.get("tool_calls") or ():
                function = call.get("function") or {}
                out.append(
                    ToolCallDelta(
                        index=int(call.get("index", 0)),
                        id=call.get("id"),
                        name=function.get("name"),
                        arguments=function.get("arguments") or "",
                    )
                )
            if choice.get("finish_reason") is not None:
                self._finish = finish_reason(choice["finish_reason"])
        if isinstance(chunk.get("usage"), dict):
            out.append(UsageReport(decode_usage(chunk["usage"])))
        return out

    def finish(self) -> list[StreamEvent]:
        """Called at EOF: the end event if the stream may end here, else STREAM_CUT."""
        if self.done:
            return []
        if self._finish is not None and not self._require_done:
            self.done = True
            return [StreamEnd(self._finish)]
        raise ProviderError(
            FailureKind.STREAM_CUT, f"{self._provider} stream ended before [DONE]"
        )
