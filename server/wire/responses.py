"""The unified API request: `POST /v1/responses`, `/v1/responses/stream`, and the
`request` inside `POST /v1/jobs` -> `GatewayRequest`.

Owns: which request shapes the unified surface accepts. `input` may be
- a string (one user message);
- `{"prompt": str}` or `{"messages": [{role, content: str | [{type: "text", text}]}]}`
  (the original design's shapes);
- an OpenAI Responses item list: messages `{type?: "message", role, content: str |
  [input_text | input_image | output_text parts]}`, `function_call` items (joined onto
  the assistant turn before them as tool calls) and `function_call_output` items (tool
  messages).
`instructions` becomes a leading system message; `developer` is `system`;
`text.format` becomes the core's chat-style `response_format`; `constraints` is the
gateway extension (see `server.wire.common`).

Rules:
- Unknown top-level fields are rejected (param names the field, with a near-match hint).
- Every other field of OpenAI's `CreateResponse` schema is accepted. Passed through to an
  OpenAI Responses provider and dropped for any other (`PASSTHROUGH`): `include`,
  `reasoning`, `service_tier`, `truncation`, `prompt_cache_key`,
  `prompt_cache_retention`, `prompt_cache_options`, `top_logprobs`, `max_tool_calls`,
  `context_management`, `moderation`, `image`, `access_programs`, `text.verbosity`, and
  a tool's `strict` (to OpenAI Chat providers too). Accepted and ignored: `store` (the
  gateway stores nothing upstream), `background` and `background_options` (answers are
  synchronous; use `POST /v1/jobs` for async work), `stream_options`. `safety_identifier` stands in for
  `user`.
- `previous_response_id` and `conversation` are refused: the gateway keeps no
  conversation state, so the client must send the whole conversation. `prompt` (a
  prompt template stored at OpenAI) is refused: dropping it would change the question.
- The encoders live in `responses_object` / `responses_stream` and are re-exported here.
"""

from __future__ import annotations

from typing import Any

from attrs import evolve

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
from server.wire.responses_object import response_object
from server.wire.responses_stream import ResponsesStreamEncoder

__all__ = ["ResponsesStreamEncoder", "parse_responses_request", "response_object"]

SUPPORTED = (
    "model", "input", "instructions", "max_output_tokens", "temperature", "top_p",
    "metadata", "stream", "tools", "tool_choice", "parallel_tool_calls", "text", "user",
    "constraints", "previous_response_id", "conversation", "safety_identifier", "prompt",
)  # fmt: skip
PASSTHROUGH = (
    "include", "reasoning", "service_tier", "truncation", "prompt_cache_key",
    "prompt_cache_retention", "prompt_cache_options", "top_logprobs", "max_tool_calls",
    "context_management", "moderation", "image", "access_programs",
)  # fmt: skip
IGNORED = (*PASSTHROUGH, "store", "background", "background_options", "stream_options")
FAMILY = "openai_responses"
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TEXT_PARTS = ("text", "input_text", "output_text")
DETAILS = ("auto", "low", "high")


def parse_responses_request(body: object) -> GatewayRequest:
    """A decoded JSON body -> `GatewayRequest`; raises `InvalidRequest` with a param path."""
    b = v.obj(body, "")
    v.check_keys(b, "", allowed=SUPPORTED, ignored=IGNORED, required=("model", "input"))
    for unsupported in ("previous_response_id", "conversation"):
        if v.present(b, unsupported):
            raise v.fail(
                f"'{unsupported}' is not supported: the gateway keeps no conversation state; "
                "send the whole conversation in 'input'",
                unsupported,
            )
    if v.present(b, "prompt"):
        raise v.fail(
            "'prompt' (a stored prompt template) is not supported; send the text in 'input' "
            "and 'instructions'",
            "prompt",
        )
    model = v.string(b["model"], "model", nonempty=True)
    messages = _input(b["input"], "input")
    if v.present(b, "instructions"):
        text = v.string(b["instructions"], "instructions")
        messages = [Message("system", (TextPart(text),)), *messages]
    tools = _tools(b.get("tools"), "tools")
    choice = _tool_choice(b.get("tool_choice"), "tool_choice")
    common.check_tool_choice(choice, tools, "tool_choice", "tool_choice.name")
    routing, max_cost = common.constraints(b.get("constraints"), "constraints")
    user = None
    for key in ("safety_identifier", "user"):
        if v.present(b, key):
            user = v.string(b[key], key)
    return GatewayRequest(
        model=model,
        messages=tuple(messages),
        max_output_tokens=_opt(b, "max_output_tokens", lambda x, p: v.integer(x, p, minimum=1)),
        temperature=_opt(b, "temperature", lambda x, p: v.number(x, p, minimum=0, maximum=2)),
        top_p=_opt(b, "top_p", lambda x, p: v.number(x, p, minimum=0, maximum=1)),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=_opt(b, "parallel_tool_calls", v.boolean),
        response_format=_text_format(b.get("text"), "text"),
        stream=bool(_opt(b, "stream", v.boolean)),
        routing=routing,
        max_cost_usd=max_cost,
        metadata=_opt(b, "metadata", v.metadata) or {},
        user=user,
        passthrough=_passthrough(b),
    )


def _passthrough(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    extra = common.passthrough(body, PASSTHROUGH)
    text = body.get("text")
    if isinstance(text, dict) and v.present(text, "verbosity"):
        extra["text"] = {"verbosity": v.string(text["verbosity"], "text.verbosity")}
    return {FAMILY: extra} if extra else {}


def _opt(body: dict[str, Any], key: str, check: Any) -> Any:
    return check(body[key], key) if v.present(body, key) else None


def _input(value: object, param: str) -> list[Message]:
    if isinstance(value, str):
        return [Message("user", (TextPart(v.string(value, param, nonempty=True)),))]
    if isinstance(value, list):
        items = v.array(value, param, min_items=1)
        out: list[Message] = []
        for i, item in enumerate(items):
            _item(item, v.index(param, i), out)
        return out
    if not isinstance(value, dict):
        raise v.wrong_type(value, "a string, an array of input items or an object", param)
    body = v.obj(value, param)
    v.check_keys(body, param, allowed=("prompt", "messages"))
    if ("prompt" in body) == ("messages" in body):
        raise v.fail(f"'{param}' needs exactly one of 'prompt' or 'messages'", param)
    if "prompt" in body:
        prompt = v.string(body["prompt"], v.at(param, "prompt"), nonempty=True)
        return [Message("user", (TextPart(prompt),))]
    p = v.at(param, "messages")
    items = v.array(body["messages"], p, min_items=1)
    return [_message(v.obj(item, v.index(p, i)), v.index(p, i)) for i, item in enumerate(items)]


def _item(item: object, param: str, out: list[Message]) -> None:
    body = v.obj(item, param)
    kind = body.get("type", "message")
    if kind == "message":
        out.append(_message(body, param))
    elif kind == "function_call":
        call = ToolCall(
            id=v.string(body.get("call_id"), v.at(param, "call_id"), nonempty=True),
            name=common.tool_name(body.get("name"), v.at(param, "name")),
            arguments=v.string(body.get("arguments"), v.at(param, "arguments")),
        )
        if out and out[-1].role == "assistant":
            out[-1] = evolve(out[-1], tool_calls=(*out[-1].tool_calls, call))
        else:
            out.append(Message("assistant", tool_calls=(call,)))
    elif kind == "function_call_output":
        call_id = v.string(body.get("call_id"), v.at(param, "call_id"), nonempty=True)
        content = _content(body.get("output"), v.at(param, "output"), images=True, empty_ok=True)
        out.append(Message("tool", content, tool_call_id=call_id))
    else:
        p = v.at(param, "type")
        allowed = ("message", "function_call", "function_call_output")
        v.one_of(kind, allowed, p)


def _message(body: dict[str, Any], param: str) -> Message:
    if "role" not in body:
        raise v.fail(f"Missing required parameter '{v.at(param, 'role')}'", v.at(param, "role"))
    role = ROLES[v.one_of(body["role"], ROLES, v.at(param, "role"))]
    if "content" not in body:
        p = v.at(param, "content")
        raise v.fail(f"Missing required parameter '{p}'", p)
    content = _content(body["content"], v.at(param, "content"), images=role == "user")
    name = v.string(body["name"], v.at(param, "name")) if v.present(body, "name") else None
    return Message(role, content, name=name)  # type: ignore[arg-type]  # from ROLES


def _content(
    value: object, param: str, *, images: bool, empty_ok: bool = False
) -> tuple[Part, ...]:
    if isinstance(value, str):
        return (TextPart(value),)
    parts = v.array(value, param, min_items=0 if empty_ok else 1)
    return tuple(_part(part, v.index(param, i), images) for i, part in enumerate(parts))


def _part(value: object, param: str, images: bool) -> Part:
    body = v.obj(value, param)
    kinds = (*TEXT_PARTS, "input_image") if images else TEXT_PARTS
    kind = v.one_of(body.get("type"), kinds, v.at(param, "type"))
    if kind in TEXT_PARTS:
        return TextPart(v.string(body.get("text"), v.at(param, "text")))
    if v.present(body, "file_id"):
        raise v.fail(
            "Images by 'file_id' are not supported; send 'image_url'", v.at(param, "file_id")
        )
    url = v.string(body.get("image_url"), v.at(param, "image_url"), nonempty=True)
    detail = None
    if v.present(body, "detail"):
        detail = v.one_of(body["detail"], DETAILS, v.at(param, "detail"))
    return ImagePart(url, detail)


def _tools(value: object, param: str) -> tuple[Tool, ...]:
    if value is None:
        return ()
    tools: list[Tool] = []
    for i, item in enumerate(v.array(value, param)):
        p = v.index(param, i)
        body = v.obj(item, p)
        if body.get("type") != "function":
            raise v.fail(
                f"'{v.at(p, 'type')}' must be 'function': only function tools are supported",
                v.at(p, "type"),
            )
        v.check_keys(body, p, allowed=("type", "name", "description", "parameters", "strict"))
        description = None
        if v.present(body, "description"):
            description = v.string(body["description"], v.at(p, "description"))
        parameters = None
        if v.present(body, "parameters"):
            parameters = common.schema(body["parameters"], v.at(p, "parameters"))
        extra = {}
        if v.present(body, "strict"):
            strict = v.boolean(body["strict"], v.at(p, "strict"))
            extra = {FAMILY: {"strict": strict}, "openai_chat": {"strict": strict}}
        name = common.tool_name(body.get("name"), v.at(p, "name"))
        tools.append(Tool(name, description, parameters, extra))
    return common.unique_tools(tools, param)


def _tool_choice(value: object, param: str) -> ToolChoice | None:
    if value is None:
        return None
    if isinstance(value, str):
        return ToolChoice(v.one_of(value, ("auto", "none", "required"), param))  # type: ignore[arg-type]
    body = v.obj(value, param)
    v.one_of(body.get("type"), ("function",), v.at(param, "type"))
    v.check_keys(body, param, allowed=("type", "name"))
    return ToolChoice("tool", common.tool_name(body.get("name"), v.at(param, "name")))


def _text_format(value: object, param: str) -> Any:
    if value is None:
        return None
    body = v.obj(value, param)
    v.check_keys(body, param, allowed=("format",), ignored=("verbosity",))
    if not v.present(body, "format"):
        return None
    p = v.at(param, "format")
    fmt = v.obj(body["format"], p)
    kind = v.one_of(fmt.get("type"), common.FORMAT_TYPES, v.at(p, "type"))
    if kind == "text":
        v.check_keys(fmt, p, allowed=("type",))
        return None
    if kind == "json_object":
        v.check_keys(fmt, p, allowed=("type",))
        return {"type": "json_object"}
    v.check_keys(
        fmt, p, allowed=("type", "name", "schema", "strict", "description"), required=("name",)
    )
    return {"type": "json_schema", "json_schema": common.json_schema_format(fmt, p)}
