"""OpenAI Chat Completions request: `POST /v1/chat/completions` (and the original
`/v1/chat.completions`) -> `(GatewayRequest, include_usage)`.

Owns: which Chat Completions requests the gateway accepts and what they mean.
- Roles: `system` and `developer` (-> system), `user`, `assistant` (content may be null
  when it has `tool_calls`), `tool` (needs `tool_call_id`). Content is a string or parts:
  `text` everywhere, `image_url` for user messages, `refusal` for assistant messages.
- `max_tokens` and `max_completion_tokens` both mean `max_output_tokens`; if both are
  given they must be equal. `n` must be 1. `stop` is a string or 1-4 strings.
  `stream_options` (`include_usage`) is only allowed with `stream: true`.
- `constraints` is the gateway extension (send it with the SDK's `extra_body`).

Rules:
- Unknown top-level fields are rejected with a near-match hint (`max_token` -> 400, param
  `max_token`). Every other field of OpenAI's request schema is accepted. Passed through
  to an OpenAI Chat (or compatible) provider and dropped for any other (`PASSTHROUGH`):
  frequency_penalty, presence_penalty, logit_bias, logprobs, top_logprobs, seed, store,
  service_tier, reasoning_effort, verbosity, prediction, web_search_options,
  prompt_cache_key, prompt_cache_retention, prompt_cache_options, moderation; a tool's `function.strict` goes to OpenAI
  Chat and Responses providers. Accepted and ignored: `modalities`, `audio` (the gateway
  carries text answers only). `safety_identifier` stands in for `user`. The deprecated
  `functions` / `function_call` are refused (use `tools`), since ignoring them would
  silently change the answer.
- Inside messages, fields the SDKs echo back (`annotations`, `audio`, ...) are ignored.
- The encoders live in `openai_chat_out` and are re-exported here.
"""

from __future__ import annotations

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
from server.wire.openai_chat_out import ChatStreamEncoder, chat_completion, error_chunk

__all__ = ["ChatStreamEncoder", "chat_completion", "error_chunk", "parse_chat_request"]

SUPPORTED = (
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
    "n", "stop", "stream", "stream_options", "tools", "tool_choice", "parallel_tool_calls",
    "response_format", "user", "safety_identifier", "metadata", "constraints",
    "functions", "function_call",
)  # fmt: skip
PASSTHROUGH = (
    "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "top_logprobs",
    "seed", "store", "service_tier", "reasoning_effort", "verbosity", "prediction",
    "web_search_options", "prompt_cache_key", "prompt_cache_retention",
    "prompt_cache_options", "moderation",
)  # fmt: skip
IGNORED = (*PASSTHROUGH, "modalities", "audio")
FAMILY = "openai_chat"
ROLES = ("system", "developer", "user", "assistant", "tool")
DETAILS = ("auto", "low", "high")


def parse_chat_request(body: object) -> tuple[GatewayRequest, bool]:
    """A decoded body -> (request, include_usage); raises `InvalidRequest` with a param."""
    b = v.obj(body, "")
    v.check_keys(b, "", allowed=SUPPORTED, ignored=IGNORED, required=("model", "messages"))
    for old in ("functions", "function_call"):
        if v.present(b, old):
            raise v.fail(
                f"'{old}' is deprecated and not supported; use 'tools' / 'tool_choice'", old
            )
    model = v.string(b["model"], "model", nonempty=True)
    items = v.array(b["messages"], "messages", min_items=1)
    messages = tuple(_message(m, v.index("messages", i)) for i, m in enumerate(items))
    if v.present(b, "n") and v.integer(b["n"], "n", minimum=1) != 1:
        raise v.fail("Only 'n': 1 is supported", "n")
    stream = v.boolean(b["stream"], "stream") if v.present(b, "stream") else False
    include_usage = _stream_options(b.get("stream_options"), stream)
    tools = _tools(b.get("tools"), "tools")
    choice = _tool_choice(b.get("tool_choice"), "tool_choice")
    common.check_tool_choice(choice, tools, "tool_choice", "tool_choice.function.name")
    routing, max_cost = common.constraints(b.get("constraints"), "constraints")
    response_format = None
    if v.present(b, "response_format"):
        response_format = common.chat_response_format(b["response_format"], "response_format")
    user = None
    for key in ("safety_identifier", "user"):
        if v.present(b, key):
            user = v.string(b[key], key)
    request = GatewayRequest(
        model=model,
        messages=messages,
        max_output_tokens=_max_tokens(b),
        temperature=_opt(b, "temperature", lambda x, p: v.number(x, p, minimum=0, maximum=2)),
        top_p=_opt(b, "top_p", lambda x, p: v.number(x, p, minimum=0, maximum=1)),
        stop=_stop(b.get("stop"), "stop"),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=_opt(b, "parallel_tool_calls", v.boolean),
        response_format=response_format,
        stream=stream,
        routing=routing,
        max_cost_usd=max_cost,
        metadata=_opt(b, "metadata", v.metadata) or {},
        user=user,
        passthrough=_passthrough(b),
    )
    return request, include_usage


def _passthrough(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    extra = common.passthrough(body, PASSTHROUGH)
    return {FAMILY: extra} if extra else {}


def _opt(body: dict[str, Any], key: str, check: Any) -> Any:
    return check(body[key], key) if v.present(body, key) else None


def _max_tokens(body: dict[str, Any]) -> int | None:
    limits = {
        key: v.integer(body[key], key, minimum=1)
        for key in ("max_completion_tokens", "max_tokens")
        if v.present(body, key)
    }
    if len(set(limits.values())) > 1:
        raise v.fail(
            "'max_tokens' and 'max_completion_tokens' disagree; send one of them", "max_tokens"
        )
    return next(iter(limits.values()), None)


def _stream_options(value: object, stream: bool) -> bool:
    if value is None:
        return False
    if not stream:
        raise v.fail("'stream_options' is only allowed when 'stream' is true", "stream_options")
    body = v.obj(value, "stream_options")
    v.check_keys(
        body, "stream_options", allowed=("include_usage",), ignored=("include_obfuscation",)
    )
    if not v.present(body, "include_usage"):
        return False
    return v.boolean(body["include_usage"], "stream_options.include_usage")


def _stop(value: object, param: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (v.string(value, param, nonempty=True),)
    return v.string_list(value, param, min_items=1, max_items=4)


def _message(value: object, param: str) -> Message:
    body = v.obj(value, param)
    if "role" not in body:
        raise v.fail(f"Missing required parameter '{v.at(param, 'role')}'", v.at(param, "role"))
    role = v.one_of(body["role"], ROLES, v.at(param, "role"))
    name = v.string(body["name"], v.at(param, "name")) if v.present(body, "name") else None
    content_param = v.at(param, "content")
    if role == "assistant":
        calls = _tool_calls(body.get("tool_calls"), v.at(param, "tool_calls"))
        if body.get("content") is None:
            if not calls:
                raise v.fail(
                    f"'{content_param}' is required unless 'tool_calls' is given", content_param
                )
            return Message("assistant", (), calls, name=name)
        return Message(
            "assistant", _content(body["content"], content_param, role), calls, name=name
        )
    if "content" not in body:
        raise v.fail(f"Missing required parameter '{content_param}'", content_param)
    content = _content(body["content"], content_param, role)
    if role == "tool":
        p = v.at(param, "tool_call_id")
        if "tool_call_id" not in body:
            raise v.fail(f"Missing required parameter '{p}'", p)
        return Message(
            "tool", content, tool_call_id=v.string(body["tool_call_id"], p, nonempty=True)
        )
    return Message("system" if role == "developer" else role, content, name=name)  # type: ignore[arg-type]


def _content(value: object, param: str, role: str) -> tuple[Part, ...]:
    if isinstance(value, str):
        return (TextPart(value),)
    parts = v.array(value, param, min_items=1)
    kinds = {"user": ("text", "image_url"), "assistant": ("text", "refusal")}.get(role, ("text",))
    out: list[Part] = []
    for i, item in enumerate(parts):
        p = v.index(param, i)
        part = v.obj(item, p)
        kind = part.get("type")
        if kind in ("input_audio", "file") and role == "user":
            raise v.fail(f"Content parts of type '{kind}' are not supported", v.at(p, "type"))
        kind = v.one_of(kind, kinds, v.at(p, "type"))
        if kind == "image_url":
            out.append(_image(part.get("image_url"), v.at(p, "image_url")))
        else:
            out.append(TextPart(v.string(part.get(kind), v.at(p, kind))))
    return tuple(out)


def _image(value: object, param: str) -> ImagePart:
    body = v.obj(value, param)
    url = v.string(body.get("url"), v.at(param, "url"), nonempty=True)
    detail = (
        v.one_of(body["detail"], DETAILS, v.at(param, "detail"))
        if v.present(body, "detail")
        else None
    )
    return ImagePart(url, detail)


def _tool_calls(value: object, param: str) -> tuple[ToolCall, ...]:
    if value is None:
        return ()
    calls: list[ToolCall] = []
    for i, item in enumerate(v.array(value, param)):
        p = v.index(param, i)
        call = v.obj(item, p)
        if v.present(call, "type"):
            v.one_of(call["type"], ("function",), v.at(p, "type"))
        fp = v.at(p, "function")
        function = v.obj(call.get("function"), fp)
        calls.append(
            ToolCall(
                id=v.string(call.get("id"), v.at(p, "id"), nonempty=True),
                name=v.string(function.get("name"), v.at(fp, "name"), nonempty=True),
                arguments=v.string(function.get("arguments"), v.at(fp, "arguments")),
            )
        )
    return tuple(calls)


def _tools(value: object, param: str) -> tuple[Tool, ...]:
    if value is None:
        return ()
    tools: list[Tool] = []
    for i, item in enumerate(v.array(value, param)):
        p = v.index(param, i)
        body = v.obj(item, p)
        v.one_of(body.get("type"), ("function",), v.at(p, "type"))
        v.check_keys(body, p, allowed=("type", "function"), required=("function",))
        fp = v.at(p, "function")
        function = v.obj(body["function"], fp)
        v.check_keys(function, fp, allowed=("name", "description", "parameters", "strict"))
        description = None
        if v.present(function, "description"):
            description = v.string(function["description"], v.at(fp, "description"))
        parameters = None
        if v.present(function, "parameters"):
            parameters = common.schema(function["parameters"], v.at(fp, "parameters"))
        extra = {}
        if v.present(function, "strict"):
            strict = v.boolean(function["strict"], v.at(fp, "strict"))
            extra = {FAMILY: {"strict": strict}, "openai_responses": {"strict": strict}}
        name = common.tool_name(function.get("name"), v.at(fp, "name"))
        tools.append(Tool(name, description, parameters, extra))
    return common.unique_tools(tools, param, "function.name")


def _tool_choice(value: object, param: str) -> ToolChoice | None:
    if value is None:
        return None
    if isinstance(value, str):
        return ToolChoice(v.one_of(value, ("auto", "none", "required"), param))  # type: ignore[arg-type]
    body = v.obj(value, param)
    v.one_of(body.get("type"), ("function",), v.at(param, "type"))
    v.check_keys(body, param, allowed=("type", "function"), required=("function",))
    fp = v.at(param, "function")
    function = v.obj(body["function"], fp)
    return ToolChoice("tool", common.tool_name(function.get("name"), v.at(fp, "name")))
