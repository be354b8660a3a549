"""OpenAI Responses codec: GatewayRequest -> `POST /v1/responses` JSON; the response object
and its SSE stream -> Completion / StreamEvents. Pure functions and one small decoder class.

Owns: the core vocabulary <-> Responses API mapping (reference: wire-formats.md section 2),
used when `[providers.openai] api = "responses"`.

Request rules:
- System messages' text goes, joined by a blank line, into `instructions`.
- User messages become `message` items with `input_text` / `input_image` parts;
  assistant text becomes a `message` item with string content, and each assistant tool
  call a `function_call` item (`call_id`, `name`, `arguments`) after it; tool messages
  become `function_call_output` items (`call_id`, `output`).
- Tools are Responses function tools `{type, name, description?, parameters, strict}`;
  `strict` is sent as false (the Responses API defaults it to true, Chat to false, and
  the gateway keeps Chat's meaning); a tool without a schema gets an empty object schema.
  `tool_choice` is a mode string or `{type: "function", name}`; `parallel_tool_calls`
  goes only with tools.
- `max_output_tokens`, `temperature`, `top_p`, `user` pass through; `response_format`
  moves to `text.format` (a Chat `json_schema` wrapper is flattened). `stop` has no
  Responses equivalent and is not sent; gateway `metadata` is never forwarded.
  `store` is always false: the gateway keeps no conversation state upstream.
- `max_output_tokens` is at most the deployment's `max_output_tokens`.
- `passthrough["openai_responses"]` fields (top-level and per tool, e.g. `strict`) are
  sent as they came, never over a field set above, except that a passed-through `text`
  object (e.g. `verbosity`) is merged with `text.format`; other families' are dropped.
Response rules:
- Text is every `output_text` (and `refusal`) part of the `message` items, in order;
  `function_call` items -> ToolCall(id=call_id). Reasoning and built-in tool items are
  skipped.
- Finish: status `incomplete` -> `length` for `max_output_tokens`, `content_filter` for
  `content_filter` (other reasons `length`); else `tool_calls` if a function call was
  made; else `stop`. A `failed` response raises ProviderError by its `error.code`.
- Usage: `input_tokens` = input_tokens - cached_tokens - cache_write_tokens (the core's
  `input_tokens` excludes both); reasoning tokens from `output_tokens_details`.
Stream rules: the event name is the SSE `event:` field, else the payload's `type`.
`response.output_text.delta` (and `response.refusal.delta`) -> TextDelta; a
`function_call` item in `response.output_item.added` starts ToolCallDelta index 0, 1, ...
in order, and `response.function_call_arguments.delta` continues it (by `output_index`,
else `item_id`); arguments that only arrive in `response.output_item.done` are sent
then. `response.completed` / `response.incomplete` -> UsageReport + StreamEnd (finish as
above); `response.failed` and `error` raise ProviderError by code; other events are
ignored. Unparsable data is STREAM_CUT, and so is EOF before a terminal event.
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

EMPTY_SCHEMA: Mapping[str, Any] = {"type": "object", "properties": {}}

INCOMPLETE_REASONS: Mapping[str, FinishReason] = {
    "max_output_tokens": "length",
    "content_filter": "content_filter",
}

# `error.code` of a failed response / `error` event -> the failure kind it means. Codes not
# listed are SERVER_ERROR, refined by `failures.kind_from_error` (context length, filter).
ERROR_CODE_KINDS: Mapping[str, FailureKind] = {
    "server_error": FailureKind.SERVER_ERROR,
    "rate_limit_exceeded": FailureKind.RATE_LIMITED,
    "insufficient_quota": FailureKind.AUTH,
    "invalid_api_key": FailureKind.AUTH,
    "invalid_prompt": FailureKind.BAD_REQUEST,
    "invalid_request_error": FailureKind.BAD_REQUEST,
    "invalid_image": FailureKind.BAD_REQUEST,
    "invalid_image_format": FailureKind.BAD_REQUEST,
    "invalid_base64_image": FailureKind.BAD_REQUEST,
    "invalid_image_url": FailureKind.BAD_REQUEST,
    "image_too_large": FailureKind.BAD_REQUEST,
    "image_too_small": FailureKind.BAD_REQUEST,
    "image_parse_error": FailureKind.BAD_REQUEST,
    "image_content_policy_violation": FailureKind.CONTENT_FILTER,
    "invalid_image_mode": FailureKind.BAD_REQUEST,
    "image_file_too_large": FailureKind.BAD_REQUEST,
    "unsupported_image_media_type": FailureKind.BAD_REQUEST,
    "empty_image_file": FailureKind.BAD_REQUEST,
    "failed_to_download_image": FailureKind.BAD_REQUEST,
    "image_file_not_found": FailureKind.BAD_REQUEST,
    "vector_store_timeout": FailureKind.TIMEOUT,
    "context_length_exceeded": FailureKind.CONTEXT_LENGTH,
}


# ---- request -------------------------------------------------------------------------------


def _input_parts(message: Message) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, TextPart):
            parts.append({"type": "input_text", "text": part.text})
        elif isinstance(part, ImagePart):
            parts.append({"type": "input_image", "image_url": part.url,
                          "detail": part.detail or "auto"})
    return parts


def encode_input(messages: Iterable[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """(instructions or None, input items) for the conversation `messages`."""
    system: list[str] = []
    items: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            system.append(message.text())
        elif message.role == "tool":
            items.append({"type": "function_call_output", "call_id": message.tool_call_id or "",
                          "output": message.text()})
        elif message.role == "assistant":
            text = message.text()
            if text or not message.tool_calls:
                items.append({"type": "message", "role": "assistant", "content": text})
            items.extend(
                {"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments}
                for c in message.tool_calls
            )
        else:
            items.append({"type": "message", "role": "user", "content": _input_parts(message)})
    return ("\n\n".join(system) if system else None), items


FAMILY = "openai_responses"


def text_format(response_format: object) -> object:
    """A Chat `response_format` as a Responses `text.format`."""
    if isinstance(response_format, Mapping) and response_format.get("type") == "json_schema":
        inner = response_format.get("json_schema")
        if isinstance(inner, Mapping):
            return {"type": "json_schema", **inner}
    return response_format


def _tool(
    name: str, description: str | None, parameters: object, extra: Mapping[str, Any]
) -> dict[str, Any]:
    tool: dict[str, Any] = {"type": "function", "name": name}
    if description is not None:
        tool["description"] = description
    tool["parameters"] = parameters if parameters is not None else dict(EMPTY_SCHEMA)
    tool["strict"] = False
    tool.update({k: v for k, v in extra.items() if k not in ("type", "name", "parameters")})
    return tool


def encode_request(
    deployment: Deployment, request: GatewayRequest, *, stream: bool
) -> dict[str, Any]:
    instructions, items = encode_input(request.messages)
    body: dict[str, Any] = {"model": deployment.upstream_model, "input": items}
    if instructions is not None:
        body["instructions"] = instructions
    limit = request.max_output_tokens
    optional: dict[str, Any] = {
        "max_output_tokens": None if limit is None else min(limit, deployment.max_output_tokens),
        "temperature": request.temperature,
        "top_p": request.top_p,
        "user": request.user,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    extra = dict(request.passthrough.get(FAMILY, {}))
    text = extra.pop("text", None)
    if isinstance(text, Mapping):
        body["text"] = dict(text)
    if request.response_format is not None:
        body["text"] = {**body.get("text", {}), "format": text_format(request.response_format)}
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
            {"type": "function", "name": choice.name} if choice.mode == "tool" else choice.mode
        )
    body.update({k: v for k, v in extra.items() if k not in body and k != "store"})
    body["store"] = False
    if stream:
        body["stream"] = True
    return body


# ---- response ------------------------------------------------------------------------------


USAGE = UsageShape(
    input=("input_tokens",),
    output=("output_tokens",),
    cached=("input_tokens_details", "cached_tokens"),
    cache_write=("input_tokens_details", "cache_write_tokens"),
    reasoning=("output_tokens_details", "reasoning_tokens"),
    input_includes_cache=True,
)


def decode_usage(usage: object) -> Usage:
    return payload.decode_usage(usage, USAGE)


def _items(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    output = data.get("output")
    return [i for i in output if isinstance(i, dict)] if isinstance(output, list) else []


def _message_text(item: Mapping[str, Any]) -> str:
    pieces: list[str] = []
    for part in item.get("content") or ():
        if not isinstance(part, dict):
            continue
        if part.get("type") == "output_text" and isinstance(part.get("text"), str):
            pieces.append(part["text"])
        elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
            pieces.append(part["refusal"])
    return "".join(pieces)


def finish_reason(data: Mapping[str, Any], *, made_calls: bool) -> FinishReason:
    if data.get("status") == "incomplete":
        details = data.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        return INCOMPLETE_REASONS.get(reason, "length") if isinstance(reason, str) else "length"
    return "tool_calls" if made_calls else "stop"


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def failure(
    provider: str, error: object, *, secrets: Iterable[str | None] = ()
) -> ProviderError:
    """The ProviderError for a failed response's `error` or an `error` stream event."""
    fields = error if isinstance(error, dict) else {}
    if isinstance(fields.get("error"), dict):  # {"type": "error", "error": {...}}
        fields = fields["error"]
    code = _str(fields.get("code"))
    err_type = _str(fields.get("type"))
    if err_type == "error":  # the event's own type, not an error class
        err_type = ""
    base = ERROR_CODE_KINDS.get(code) or ERROR_CODE_KINDS.get(err_type) or FailureKind.SERVER_ERROR
    payload = {"error": {"code": code, "type": err_type, "message": _str(fields.get("message"))}}
    return error_from_payload(provider, payload, secrets=secrets, base=base)


def decode_response(
    data: Mapping[str, Any], *, provider: str = "openai", secrets: Iterable[str | None] = ()
) -> Completion:
    """A Responses object -> Completion. Raises ValueError if it is not a response object
    and ProviderError if its status is `failed` (or `cancelled`)."""
    if not isinstance(data.get("output"), list):
        raise ValueError("the response has no output list")
    status = data.get("status")
    if status == "failed":
        raise failure(provider, data.get("error"), secrets=secrets)
    if status == "cancelled":
        raise ProviderError(FailureKind.SERVER_ERROR, f"{provider} cancelled the response")
    texts: list[str] = []
    calls: list[ToolCall] = []
    for item in _items(data):
        if item.get("type") == "message":
            texts.append(_message_text(item))
        elif item.get("type") == "function_call":
            calls.append(ToolCall(id=str(item.get("call_id") or item.get("id") or ""),
                                  name=str(item.get("name", "")),
                                  arguments=str(item.get("arguments") or "")))
    return Completion(
        text="".join(texts),
        finish_reason=finish_reason(data, made_calls=bool(calls)),
        usage=decode_usage(data.get("usage")),
        tool_calls=tuple(calls),
        upstream_model=data.get("model") if isinstance(data.get("model"), str) else None,
        upstream_id=data.get("id") if isinstance(data.get("id"), str) else None,
    )


# ---- stream --------------------------------------------------------------------------------


class EventDecoder:
    """SSE events of one Responses stream -> StreamEvents (see the module's stream rules)."""

    def __init__(self, provider: str = "openai", *, secrets: Iterable[str | None] = ()) -> None:
        self._provider = provider
        self._secrets = tuple(secrets)
        self._calls = 0  # function_call items seen so far
        self._by_output: dict[int, int] = {}  # output_index -> tool call index
        self._by_item: dict[str, int] = {}  # item id -> tool call index
        self._has_arguments: set[int] = set()  # tool calls whose arguments were sent
        self.done = False

    def on_event(self, event: str, data: str) -> list[StreamEvent]:
        if self.done:
            return []
        payload = event_object(self._provider, data)
        name = payload.get("type") if event in ("", "message") else event
        if name == "error":
            raise failure(self._provider, payload, secrets=self._secrets)
        if name == "response.failed":
            response = payload.get("response")
            error = response.get("error") if isinstance(response, dict) else None
            raise failure(self._provider, error, secrets=self._secrets)
        try:
            return self._handle(name, payload)
        except (TypeError, ValueError, AttributeError, KeyError):
            raise ProviderError(
                FailureKind.STREAM_CUT, f"{self._provider} sent a malformed {name} event"
            ) from None

    def _tool_index(self, payload: Mapping[str, Any]) -> int | None:
        output_index = payload.get("output_index")
        if isinstance(output_index, int) and output_index in self._by_output:
            return self._by_output[output_index]
        item_id = payload.get("item_id")
        return self._by_item.get(item_id) if isinstance(item_id, str) else None

    def _handle(self, name: object, payload: dict[str, Any]) -> list[StreamEvent]:
        if name in ("response.output_text.delta", "response.refusal.delta"):
            delta = payload["delta"]
            return [TextDelta(delta)] if isinstance(delta, str) and delta else []
        if name == "response.output_item.added":
            return self._item_added(payload)
        if name == "response.function_call_arguments.delta":
            index = self._tool_index(payload)
            delta = payload["delta"]
            if index is None or not isinstance(delta, str) or not delta:
                return []
            self._has_arguments.add(index)
            return [ToolCallDelta(index=index, arguments=delta)]
        if name == "response.output_item.done":
            return self._item_done(payload)
        if name in ("response.completed", "response.incomplete"):
            response = payload["response"]
            if not isinstance(response, dict):
                raise TypeError("response is not an object")
            self.done = True
            finish = finish_reason(response, made_calls=self._calls > 0)
            return [UsageReport(decode_usage(response.get("usage"))), StreamEnd(finish)]
        return []  # created, in_progress, content_part.*, *.done, reasoning, unknown

    def _item_added(self, payload: dict[str, Any]) -> list[StreamEvent]:
        item = payload["item"]
        if not isinstance(item, dict) or item.get("type") != "function_call":
            return []
        index = self._calls
        self._calls += 1
        if isinstance(payload.get("output_index"), int):
            self._by_output[payload["output_index"]] = index
        if isinstance(item.get("id"), str):
            self._by_item[item["id"]] = index
        arguments = item.get("arguments") if isinstance(item.get("arguments"), str) else ""
        if arguments:
            self._has_arguments.add(index)
        return [ToolCallDelta(index=index, id=item.get("call_id") or item.get("id"),
                              name=item.get("name"), arguments=arguments or "")]

    def _item_done(self, payload: dict[str, Any]) -> list[StreamEvent]:
        item = payload["item"]
        if not isinstance(item, dict) or item.get("type") != "function_call":
            return []
        index = self._tool_index({"output_index": payload.get("output_index"),
                                  "item_id": item.get("id")})
        arguments = item.get("arguments")
        if index is None or index in self._has_arguments or not isinstance(arguments, str):
            return []
        self._has_arguments.add(index)
        return [ToolCallDelta(index=index, arguments=arguments)] if arguments else []

    def finish(self) -> list[StreamEvent]:
        if self.done:
            return []
        raise ProviderError(
            FailureKind.STREAM_CUT, f"{self._provider} stream ended before response.completed"
        )
