"""The Anthropic Messages façade request: `POST /v1/messages` -> `GatewayRequest`.

Owns: which Messages requests the gateway accepts and what they mean.
- Required: `model`, `max_tokens` (>= 1), `messages` (roles `user` / `assistant`).
- Content is a string or blocks: `text`; `image` (`source` base64 -> a `data:` URL, or
  `url`); `tool_use` in assistant turns (-> tool calls, `input` re-encoded as JSON text);
  `tool_result` in user turns (-> one `tool` message each, placed before the turn's
  other content; `is_error: true` prefixes the text with "[tool error] " since the core
  has no such flag). `thinking` / `redacted_thinking` blocks echoed back from earlier
  answers are dropped. `cache_control` on any block is ignored.
- `system` (string or text blocks) becomes a leading system message. `stop_sequences`,
  `temperature` (0..1), `top_p` (0..1), `tools` `[{name, description, input_schema}]`,
  `tool_choice {type: auto|any|tool|none, name, disable_parallel_tool_use}`
  (`any` -> required; `disable_parallel_tool_use` -> parallel_tool_calls false),
  `metadata.user_id` -> user, `stream`, and the gateway's `constraints` extension.

Rules:
- `output_config.format` (`{type: "json_schema", schema}`) becomes the core's
  `response_format` (json_schema named "output"), so it reaches Anthropic as
  `output_config.format` and an OpenAI-format provider as `response_format` /
  `text.format`; the rest of `output_config` (e.g. `effort`) is passed through.
- Passed through to an Anthropic provider and dropped for any other (`PASSTHROUGH`):
  `top_k`, `service_tier`, `thinking`, `container`, `context_management`,
  `mcp_servers`, `inference_geo`, `diagnostics`, `speed`, the top-level
  `cache_control` (automatic caching);
  on tools: `cache_control`, `strict`, `eager_input_streaming`, `defer_loading`,
  `input_examples`, `allowed_callers` (`TOOL_PASSTHROUGH`).
- Unknown top-level fields are rejected with a near-match hint.
- Validation errors are `InvalidRequest` with a param path; the route renders them with
  `anthropic_error_body` (Anthropic's error shape). Encoders live in `anthropic_out`.
"""

from __future__ import annotations

import json
from typing import Any

from core.model import (
    GatewayRequest,
    ImagePart,
    Message,
    Part,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from server.wire import common
from server.wire import validate as v
from server.wire.anthropic_out import AnthropicStreamEncoder, anthropic_error_body, message_object

__all__ = [
    "AnthropicStreamEncoder",
    "anthropic_error_body",
    "message_object",
    "parse_count_tokens_request",
    "parse_messages_request",
]

SUPPORTED = (
    "model", "max_tokens", "messages", "system", "stop_sequences", "temperature", "top_p",
    "tools", "tool_choice", "metadata", "stream", "constraints", "output_config",
)  # fmt: skip
PASSTHROUGH = (
    "top_k", "service_tier", "thinking", "container", "context_management", "mcp_servers",
    "inference_geo", "cache_control", "diagnostics", "speed",
)  # fmt: skip
IGNORED = PASSTHROUGH
TOOL_PASSTHROUGH = (
    "cache_control", "strict", "eager_input_streaming", "defer_loading", "input_examples",
    "allowed_callers",
)  # fmt: skip
FAMILY = "anthropic"
OUTPUT_NAME = "output"  # the json_schema name given to an `output_config.format`
CHOICES = {"auto": "auto", "any": "required", "tool": "tool", "none": "none"}
SKIPPED_BLOCKS = ("thinking", "redacted_thinking")


def parse_messages_request(body: object) -> GatewayRequest:
    """A decoded body -> `GatewayRequest`; raises `InvalidRequest` with a param path."""
    return _parse(body, required=("model", "max_tokens", "messages"))


def parse_count_tokens_request(body: object) -> GatewayRequest:
    """`POST /v1/messages/count_tokens`: a Messages body without `max_tokens`."""
    return _parse(body, required=("model", "messages"))


def _parse(body: object, required: tuple[str, ...]) -> GatewayRequest:
    b = v.obj(body, "")
    v.check_keys(b, "", allowed=SUPPORTED, ignored=IGNORED, required=required)
    model = v.string(b["model"], "model", nonempty=True)
    max_tokens = None
    if v.present(b, "max_tokens"):
        max_tokens = v.integer(b["max_tokens"], "max_tokens", minimum=1)
    messages: list[Message] = []
    if v.present(b, "system"):
        messages.append(Message("system", _system(b["system"], "system")))
    items = v.array(b["messages"], "messages", min_items=1)
    for i, item in enumerate(items):
        messages += _turn(item, v.index("messages", i))
    if all(m.role == "system" for m in messages):
        raise v.fail("'messages' holds no content to answer", "messages")
    tools = _tools(b.get("tools"), "tools")
    choice, parallel = _tool_choice(b.get("tool_choice"), "tool_choice")
    common.check_tool_choice(choice, tools, "tool_choice", "tool_choice.name")
    routing, max_cost = common.constraints(b.get("constraints"), "constraints")
    stop: tuple[str, ...] = ()
    if v.present(b, "stop_sequences"):
        stop = v.string_list(b["stop_sequences"], "stop_sequences")
    response_format, output_config = _output_config(b.get("output_config"), "output_config")
    passthrough = {k: v.plain_json(b[k]) for k in PASSTHROUGH if v.present(b, k)}
    if output_config:
        passthrough["output_config"] = output_config
    return GatewayRequest(
        model=model,
        messages=tuple(messages),
        max_output_tokens=max_tokens,
        temperature=_opt(b, "temperature", lambda x, p: v.number(x, p, minimum=0, maximum=1)),
        top_p=_opt(b, "top_p", lambda x, p: v.number(x, p, minimum=0, maximum=1)),
        stop=stop,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        stream=bool(_opt(b, "stream", v.boolean)),
        routing=routing,
        max_cost_usd=max_cost,
        user=_user(b.get("metadata"), "metadata"),
        response_format=response_format,
        passthrough={FAMILY: passthrough} if passthrough else {},
    )


def _output_config(value: object, param: str) -> tuple[Any, dict[str, Any]]:
    """(the core's response_format or None, the other output_config fields)."""
    if value is None:
        return None, {}
    body = dict(v.obj(value, param))
    fmt = body.pop("format", None)
    rest = {k: v.plain_json(x) for k, x in body.items() if x is not None}
    if fmt is None:
        return None, rest
    p = v.at(param, "format")
    f = v.obj(fmt, p)
    v.one_of(f.get("type"), ("json_schema",), v.at(p, "type"))
    v.check_keys(f, p, allowed=("type", "schema"), required=("schema",))
    schema = common.schema(f["schema"], v.at(p, "schema"))
    return {"type": "json_schema", "json_schema": {"name": OUTPUT_NAME, "schema": schema}}, rest


def _opt(body: dict[str, Any], key: str, check: Any) -> Any:
    return check(body[key], key) if v.present(body, key) else None


def _user(value: object, param: str) -> str | None:
    if value is None:
        return None
    body = v.obj(value, param)
    v.check_keys(body, param, allowed=("user_id",))
    return v.string(body["user_id"], v.at(param, "user_id")) if v.present(body, "user_id") else None


def _system(value: object, param: str) -> tuple[Part, ...]:
    if isinstance(value, str):
        return (TextPart(value),)
    blocks = v.array(value, param)
    parts: list[Part] = []
    for i, item in enumerate(blocks):
        p = v.index(param, i)
        block = v.obj(item, p)
        v.one_of(block.get("type"), ("text",), v.at(p, "type"))
        parts.append(TextPart(v.string(block.get("text"), v.at(p, "text"))))
    return tuple(parts)


def _turn(value: object, param: str) -> list[Message]:
    body = v.obj(value, param)
    role = v.one_of(body.get("role"), ("user", "assistant"), v.at(param, "role"))
    cp = v.at(param, "content")
    if "content" not in body:
        raise v.fail(f"Missing required parameter '{cp}'", cp)
    if isinstance(body["content"], str):
        return [Message(role, (TextPart(body["content"]),))]  # type: ignore[arg-type]
    blocks = v.array(body["content"], cp, min_items=1)
    kinds = ("text", "image", "tool_result") if role == "user" else ("text", "tool_use")
    parts: list[Part] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    for i, item in enumerate(blocks):
        p = v.index(cp, i)
        block = v.obj(item, p)
        if role == "assistant" and block.get("type") in SKIPPED_BLOCKS:
            continue
        kind = v.one_of(block.get("type"), kinds, v.at(p, "type"))
        if kind == "text":
            parts.append(TextPart(v.string(block.get("text"), v.at(p, "text"))))
        elif kind == "image":
            parts.append(_image(block.get("source"), v.at(p, "source")))
        elif kind == "tool_use":
            calls.append(_tool_use(block, p))
        else:
            results.append(_tool_result(block, p))
    if role == "assistant":
        return [Message("assistant", tuple(parts), tuple(calls))] if parts or calls else []
    return results + ([Message("user", tuple(parts))] if parts else [])


def _image(value: object, param: str) -> ImagePart:
    source = v.obj(value, param)
    kind = v.one_of(source.get("type"), ("base64", "url"), v.at(param, "type"))
    if kind == "url":
        return ImagePart(v.string(source.get("url"), v.at(param, "url"), nonempty=True))
    media = v.one_of(source.get("media_type"), common.MEDIA_TYPES, v.at(param, "media_type"))
    data = v.string(source.get("data"), v.at(param, "data"), nonempty=True)
    return ImagePart(common.data_url(media, data))


def _tool_use(block: dict[str, Any], param: str) -> ToolCall:
    call_input = v.obj(block.get("input"), v.at(param, "input"))
    return ToolCall(
        id=v.string(block.get("id"), v.at(param, "id"), nonempty=True),
        name=v.string(block.get("name"), v.at(param, "name"), nonempty=True),
        arguments=json.dumps(v.plain_json(call_input), ensure_ascii=False, separators=(",", ":")),
    )


def _tool_result(block: dict[str, Any], param: str) -> Message:
    call_id = v.string(block.get("tool_use_id"), v.at(param, "tool_use_id"), nonempty=True)
    cp = v.at(param, "content")
    content: list[Part] = []
    raw = block.get("content")
    if isinstance(raw, str):
        content.append(TextPart(raw))
    elif raw is not None:
        for i, item in enumerate(v.array(raw, cp)):
            p = v.index(cp, i)
            inner = v.obj(item, p)
            kind = v.one_of(inner.get("type"), ("text", "image"), v.at(p, "type"))
            if kind == "text":
                content.append(TextPart(v.string(inner.get("text"), v.at(p, "text"))))
            else:
                content.append(_image(inner.get("source"), v.at(p, "source")))
    if v.present(block, "is_error") and v.boolean(block["is_error"], v.at(param, "is_error")):
        content.insert(0, TextPart("[tool error] "))
    return Message("tool", tuple(content), tool_call_id=call_id)


def _tools(value: object, param: str) -> tuple[Tool, ...]:
    if value is None:
        return ()
    tools: list[Tool] = []
    for i, item in enumerate(v.array(value, param)):
        p = v.index(param, i)
        body = v.obj(item, p)
        if v.present(body, "type") and body["type"] != "custom":
            raise v.fail(
                f"'{v.at(p, 'type')}': only custom (client) tools are supported, got {body['type']!r}",
                v.at(p, "type"),
            )
        v.check_keys(
            body, p, allowed=("type", "name", "description", "input_schema"),
            ignored=TOOL_PASSTHROUGH, required=("name", "input_schema"),
        )  # fmt: skip
        description = None
        if v.present(body, "description"):
            description = v.string(body["description"], v.at(p, "description"))
        parameters = common.schema(body["input_schema"], v.at(p, "input_schema"))
        extra = {k: v.plain_json(body[k]) for k in TOOL_PASSTHROUGH if v.present(body, k)}
        name = common.tool_name(body["name"], v.at(p, "name"))
        tools.append(Tool(name, description, parameters, {FAMILY: extra} if extra else {}))
    return common.unique_tools(tools, param)


def _tool_choice(value: object, param: str) -> tuple[ToolChoice | None, bool | None]:
    if value is None:
        return None, None
    body = v.obj(value, param)
    kind = CHOICES[v.one_of(body.get("type"), CHOICES, v.at(param, "type"))]
    v.check_keys(body, param, allowed=("type", "name", "disable_parallel_tool_use"))
    parallel = None
    if v.present(body, "disable_parallel_tool_use"):
        parallel = not v.boolean(
            body["disable_parallel_tool_use"], v.at(param, "disable_parallel_tool_use")
        )
    if kind == "tool":
        return ToolChoice("tool", common.tool_name(body.get("name"), v.at(param, "name"))), parallel
    return ToolChoice(kind), parallel  # type: ignore[arg-type]  # from CHOICES
