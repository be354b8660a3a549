"""Anthropic Messages codec: GatewayRequest -> `POST /v1/messages` JSON; the response and
its SSE stream -> Completion / StreamEvents. Pure functions and one small decoder class.

Owns: the OpenAI-shaped core vocabulary <-> Anthropic mapping (wire-formats.md 4 and 5).

Request rules:
- Every system message's text goes, joined by a blank line, into top-level `system`.
- Tool messages become user `tool_result` blocks; assistant tool calls become `tool_use`
  blocks with their arguments parsed (text that is not a JSON object becomes `{}`, as the
  API takes only objects). Consecutive messages of one role merge into one turn, and in
  a merged user turn the tool_result blocks come first (the API requires it). Empty
  text blocks are dropped.
- Images: `data:<type>;base64,<data>` URLs -> base64 source; anything else -> url source.
- `max_tokens` (required by the API) = the request's limit, else the deployment's
  `max_output_tokens` capped at 4096; never above the deployment's `max_output_tokens`. `temperature` is clamped to 1.0: Anthropic's range
  is 0-1 where OpenAI's is 0-2, and an out-of-range value would be a 400.
- `stop` -> `stop_sequences`; tool_choice auto/required/none/tool -> auto/any/none/tool;
  `parallel_tool_calls=false` -> `disable_parallel_tool_use` (not with `none`);
  `user` -> `metadata.user_id`. A json_schema `response_format` -> `output_config.format`
  (`{type: "json_schema", schema}`); `json_object` (no schema to give) is not sent.
- The request's and tools' `passthrough["anthropic"]` fields are sent as they came
  (`output_config` merged with the format above); other families' are dropped.
Response rules: text blocks joined; tool_use -> ToolCall(arguments=json.dumps(input));
stop_reason per `STOP_REASONS` (unknown -> stop); usage: input_tokens, cache_read ->
cached_input_tokens, cache_creation -> cache_write_tokens.
Stream rules: `message_start` reports input usage; tool_use blocks are numbered 0, 1, ...
in order as ToolCallDelta indexes; `message_delta` usage is cumulative and replaces the
earlier figures it carries; `message_stop` -> StreamEnd; `ping` and unknown events are
ignored; `event: error` raises ProviderError by `error.type`; unparsable data is
STREAM_CUT, and so is EOF before `message_stop`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from adapters.providers import payload
from adapters.providers.base import ProviderError
from adapters.providers.failures import error_from_payload
from adapters.providers.payload import NO_USAGE, UsageShape, event_object
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

DEFAULT_MAX_TOKENS_CAP = 4096
FAMILY = "anthropic"
MAX_TEMPERATURE = 1.0

STOP_REASONS: Mapping[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",
}

TOOL_CHOICES: Mapping[str, str] = {"auto": "auto", "required": "any", "none": "none", "tool": "tool"}


# ---- request -------------------------------------------------------------------------------


def image_block(part: ImagePart) -> dict[str, Any]:
    url = part.url
    if url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[len("data:"):].partition(";base64,")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [{"type": "tool_result", "tool_use_id": message.tool_call_id or "",
                 "content": message.text()}]
    blocks: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, TextPart):
            if part.text.strip():
                blocks.append({"type": "text", "text": part.text})
        else:
            blocks.append(image_block(part))
    for call in message.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name,
                       "input": _tool_input(call.arguments)})
    return blocks


def encode_messages(messages: Iterable[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """(system text or None, merged user/assistant turns)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            system.append(message.text())
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":  # tool results first, order otherwise kept
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    return ("\n\n".join(system) if system else None), turns


def _tool_choice(request: GatewayRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    out: dict[str, Any] | None = None
    if choice is not None:
        out = {"type": TOOL_CHOICES[choice.mode]}
        if choice.mode == "tool":
            out["name"] = choice.name
    if request.parallel_tool_calls is False and request.tools:
        out = out or {"type": "auto"}
        if out["type"] != "none":
            out["disable_parallel_tool_use"] = True
    return out


def encode_request(
    deployment: Deployment, request: GatewayRequest, *, stream: bool
) -> dict[str, Any]:
    system, turns = encode_messages(request.messages)
    max_tokens = request.max_output_tokens
    if max_tokens is None:
        max_tokens = min(deployment.max_output_tokens, DEFAULT_MAX_TOKENS_CAP)
    max_tokens = min(max_tokens, deployment.max_output_tokens)
    body: dict[str, Any] = {
        "model": deployment.upstream_model, "max_tokens": max_tokens, "messages": turns,
    }
    if system is not None:
        body["system"] = system
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, MAX_TEMPERATURE)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.tools:
        body["tools"] = [
            {"name": t.name,
             **({"description": t.description} if t.description is not None else {}),
             "input_schema": t.parameters if t.parameters is not None
             else {"type": "object", "properties": {}},
             **t.passthrough.get(FAMILY, {})}
            for t in request.tools
        ]
    choice = _tool_choice(request)
    if choice is not None:
        body["tool_choice"] = choice
    if request.user is not None:
        body["metadata"] = {"user_id": request.user}
    extra = dict(request.passthrough.get(FAMILY, {}))
    output_format = _output_format(request.response_format)
    if output_format is not None:
        config = extra.get("output_config")
        extra["output_config"] = {**(config if isinstance(config, Mapping) else {}),
                                  "format": output_format}
    body.update({k: v for k, v in extra.items() if k not in body})
    if stream:
        body["stream"] = True
    return body


def _output_format(response_format: object) -> dict[str, Any] | None:
    """A chat-style json_schema `response_format` as Anthropic's `output_config.format`."""
    if not isinstance(response_format, Mapping) or response_format.get("type") != "json_schema":
        return None
    inner = response_format.get("json_schema")
    schema = inner.get("schema") if isinstance(inner, Mapping) else None
    if not isinstance(schema, Mapping):
        return None
    return {"type": "json_schema", "schema": schema}


# ---- response ------------------------------------------------------------------------------




USAGE = UsageShape(
    input=("input_tokens",),
    output=("output_tokens",),
    cached=("cache_read_input_tokens",),
    cache_write=("cache_creation_input_tokens",),
)


def decode_usage(usage: object, base: Usage = NO_USAGE) -> Usage:
    """Anthropic usage -> Usage; fields absent from `usage` keep their value in `base`."""
    return payload.decode_usage(usage, USAGE, base)


def stop_reason(value: object) -> FinishReason:
    return STOP_REASONS.get(value, "stop") if isinstance(value, str) else "stop"


def decode_response(data: Mapping[str, Any]) -> Completion:
    """A Messages response -> Completion. Raises ValueError if `content` is not a list."""
    content = data.get("content")
    if not isinstance(content, list):
        raise ValueError("the response has no content list")
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            calls.append(ToolCall(id=str(block.get("id", "")), name=str(block.get("name", "")),
                                  arguments=json.dumps(block.get("input", {}))))
    return Completion(
        text="".join(texts),
        finish_reason=stop_reason(data.get("stop_reason")),
        usage=decode_usage(data.get("usage")),
        tool_calls=tuple(calls),
        upstream_model=data.get("model") if isinstance(data.get("model"), str) else None,
        upstream_id=data.get("id") if isinstance(data.get("id"), str) else None,
    )


# ---- stream --------------------------------------------------------------------------------


class EventDecoder:
    """SSE events of one Messages stream -> StreamEvents (see the module's stream rules)."""

    def __init__(self, provider: str = "anthropic", *, secrets: Iterable[str | None] = ()) -> None:
        self._provider = provider
        self._secrets = tuple(secrets)
        self._usage = Usage()
        self._finish: FinishReason = "stop"
        self._tool_index: dict[int, int] = {}  # content block index -> tool call index
        self.done = False

    def on_event(self, event: str, data: str) -> list[StreamEvent]:
        if self.done:
            return []
        payload = event_object(self._provider, data)
        name = payload.get("type") if event in ("", "message") else event
        if name == "error":
            raise error_from_payload(self._provider, payload, secrets=self._secrets)
        try:
            return self._handle(name, payload)
        except (TypeError, ValueError, AttributeError, KeyError):
            raise ProviderError(
                FailureKind.STREAM_CUT, f"{self._provider} sent a malformed {name} event"
            ) from None

    def _handle(self, name: object, payload: dict[str, Any]) -> list[StreamEvent]:
        if name == "message_start":
            self._usage = decode_usage((payload.get("message") or {}).get("usage"))
            return [UsageReport(self._usage)]
        if name == "content_block_start":
            block = payload["content_block"]
            if block.get("type") == "tool_use":
                index = self._tool_index.setdefault(payload["index"], len(self._tool_index))
                return [ToolCallDelta(index=index, id=block.get("id"), name=block.get("name"))]
            if block.get("type") == "text" and block.get("text"):
                return [TextDelta(block["text"])]
            return []
        if name == "content_block_delta":
            delta = payload["delta"]
            if delta.get("type") == "text_delta" and delta.get("text"):
                return [TextDelta(delta["text"])]
            if delta.get("type") == "input_json_delta" and payload["index"] in self._tool_index:
                return [ToolCallDelta(index=self._tool_index[payload["index"]],
                                      arguments=delta.get("partial_json") or "")]
            return []
        if name == "message_delta":
            reason = (payload.get("delta") or {}).get("stop_reason")
            if reason is not None:
                self._finish = stop_reason(reason)
            if isinstance(payload.get("usage"), dict):
                self._usage = decode_usage(payload["usage"], self._usage)
                return [UsageReport(self._usage)]
            return []
        if name == "message_stop":
            self.done = True
            return [StreamEnd(self._finish)]
        return []  # ping, content_block_stop, and event types we do not know

    def finish(self) -> list[StreamEvent]:
        if self.done:
            return []
        raise ProviderError(
            FailureKind.STREAM_CUT, f"{self._provider} stream ended before message_stop"
        )
