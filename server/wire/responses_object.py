"""The unified API's answer: a `Completion` -> the OpenAI Responses `response` object.

Owns: the response object and its output items, shared by the whole answer
(`response_object`) and the stream's snapshots (`ResponsesStreamEncoder`). The shape is
what the official `openai` SDK parses (`client.responses.create(...).output_text`),
plus a `gateway` object (provider, deployment, attempts, cost) passed in by the caller.

Rules:
- Pure: ids and times are arguments. Item ids derive from the response id
  (`resp_X` -> `msg_X`, `fc_X_<n>`), so one response always names its items the same.
- `status="completed"` becomes `incomplete` when the answer was cut by the token limit
  (`incomplete_details.reason = "max_output_tokens"`) or a content filter.
- `usage.input_tokens` is the whole input, cached tokens included (OpenAI's meaning);
  `input_tokens_details.cached_tokens` says how many were cached.
- Request parameters are echoed from the `GatewayRequest` (`instructions` is the text of
  a leading system message). `error.code` is the gateway's own code (`core.errors`), as in
  its HTTP errors and the stream's `error` event, with the request id beside it. Where
  that code is one of the Responses vocabulary (`rate_limit_exceeded`) the object is
  valid for a strict reader; otherwise (`upstream_error`, `budget_exceeded`, ...) the
  `openai` SDK still parses it (it builds stream events without validating literals),
  but a strict `Response.model_validate` refuses it (see docs/api.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import GatewayError
from core.model import Completion, GatewayRequest, ToolCall, Usage

Json = dict[str, Any]


def item_suffix(response_id: str) -> str:
    return response_id.removeprefix("resp_")


def message_item_id(response_id: str) -> str:
    return "msg_" + item_suffix(response_id)


def call_item_id(response_id: str, n: int) -> str:
    return f"fc_{item_suffix(response_id)}_{n}"


def text_part(text: str) -> Json:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str | None, status: str) -> Json:
    content = [] if text is None else [text_part(text)]
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def call_item(item_id: str, call: ToolCall, status: str) -> Json:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    }


def usage_object(usage: Usage) -> Json:
    return {
        "input_tokens": usage.total_input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_input_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def error_object(error: GatewayError, request_id: str | None = None) -> Json:
    """`response.error`: the gateway's own `code` (the one its HTTP errors and the stream's
    `error` event carry), so `response.failed` and `error` always say the same thing."""
    return {
        "code": error.code,
        "message": error.message,
        "param": error.param,
        "type": error.type,
        "request_id": request_id,
    }


INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _format_echo(response_format: object) -> Json:
    if not isinstance(response_format, Mapping):
        return {"type": "text"}
    if response_format.get("type") == "json_schema":
        inner = response_format.get("json_schema")
        spec = dict(inner) if isinstance(inner, Mapping) else {}
        spec.setdefault("schema", {})
        return {"type": "json_schema", **spec}
    return {"type": str(response_format.get("type", "text"))}


def _tool_choice_echo(request: GatewayRequest) -> Any:
    choice = request.tool_choice
    if choice is None:
        return "auto"
    if choice.mode == "tool":
        return {"type": "function", "name": choice.name}
    return choice.mode


def _instructions(request: GatewayRequest) -> str | None:
    first = request.messages[0] if request.messages else None
    return first.text() if first is not None and first.role == "system" else None


def response_body(
    *,
    response_id: str,
    created_at: int,
    model: str,
    request: GatewayRequest,
    status: str,
    output: list[Json],
    usage: Usage | None,
    error: GatewayError | None,
    incomplete_reason: str | None,
    gateway: Mapping[str, Any] | None,
    metadata: Mapping[str, str] | None = None,
    request_id: str | None = None,
) -> Json:
    """The response object from already-built output items (the stream uses this too)."""
    body: Json = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "model": model,
        "output": output,
        "usage": None if usage is None else usage_object(usage),
        "error": None if error is None else error_object(error, request_id),
        "incomplete_details": None if incomplete_reason is None else {"reason": incomplete_reason},
        "instructions": _instructions(request),
        "max_output_tokens": request.max_output_tokens,
        "metadata": dict(request.metadata if metadata is None else metadata),
        "temperature": request.temperature,
        "top_p": request.top_p,
        "tools": [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
                "strict": None,
            }
            for t in request.tools
        ],
        "tool_choice": _tool_choice_echo(request),
        "parallel_tool_calls": True
        if request.parallel_tool_calls is None
        else request.parallel_tool_calls,
        "text": {"format": _format_echo(request.response_format)},
        "user": request.user,
        "background": False,
        "store": False,
    }
    if gateway is not None:
        body["gateway"] = dict(gateway)
    return body


def completion_output(response_id: str, completion: Completion, item_status: str) -> list[Json]:
    """A message item (unless the answer is only tool calls), then one item per call."""
    output: list[Json] = []
    if completion.text or not completion.tool_calls:
        output.append(message_item(message_item_id(response_id), completion.text, item_status))
    for n, call in enumerate(completion.tool_calls):
        output.append(call_item(call_item_id(response_id, n), call, "completed"))
    return output


def response_object(
    *,
    response_id: str,
    created_at: int,
    model: str,
    completion: Completion | None,
    status: str,
    error: GatewayError | None,
    gateway: Mapping[str, Any] | None,
    request: GatewayRequest,
    metadata: Mapping[str, str] | None = None,
) -> Json:
    """The whole answer as an OpenAI Responses object (status completed|failed|...)."""
    reason = None
    if completion is not None and status == "completed":
        reason = INCOMPLETE_REASONS.get(completion.finish_reason)
        status = "incomplete" if reason else status
    item_status = "incomplete" if status == "incomplete" else "completed"
    return response_body(
        response_id=response_id,
        created_at=created_at,
        model=model,
        request=request,
        status=status,
        output=[]
        if completion is None
        else completion_output(response_id, completion, item_status),
        usage=None if completion is None else completion.usage,
        error=error,
        incomplete_reason=reason,
        gateway=gateway,
        metadata=metadata,
    )
