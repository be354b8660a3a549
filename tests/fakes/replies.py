"""What the fake provider answers: deterministic replies in OpenAI and Anthropic shapes.

Owns: the answer rules (documented in `tests/fakes/__init__.py`) and the wire shapes of
answers, stream events and error bodies. Pure functions of the request JSON.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import frozen

OPENAI_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", "slow_down"),
}
ANTHROPIC_ERRORS: dict[int, str] = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
    429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error",
}


@frozen
class Reply:
    words: tuple[str, ...]  # the answer text, split on single spaces
    finish: str  # stop | length | tool_calls
    input_tokens: int
    tool: tuple[str, str] | None  # (name, arguments JSON) when the answer is a tool call

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def output_tokens(self) -> int:
        return len(self.words) if self.tool is None else len(self.tool[1].split())


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def plan_reply(body: dict[str, Any]) -> Reply:
    """The reply to a chat-completions, messages or responses request body (same rules)."""
    if "input" in body:
        body = responses_as_chat(body)
    messages = [m for m in body.get("messages", []) if isinstance(m, dict)]
    system = _texts(body.get("system"))
    input_tokens = sum(len(t.split()) for t in system) + (4 if system else 0)
    input_tokens += sum(sum(len(t.split()) for t in _texts(m.get("content"))) + 4 for m in messages)
    users = [m for m in messages if m.get("role") == "user" and _texts(m.get("content"))]
    said = " ".join(_texts(users[-1]["content"])) if users else ""
    tool = _tool_for(body, said)
    if tool is not None:
        return Reply((), "tool_calls", input_tokens, tool)
    words = ("Echo:", *(said.split() or ["ok"]))
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and len(words) > limit:
        return Reply(words[:limit], "length", input_tokens, None)
    return Reply(words, "stop", input_tokens, None)


def responses_as_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A Responses request seen as a chat one: `instructions` is a system message, every
    input item one message (a function_call one with no text), `max_output_tokens` the
    limit."""
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item.get("role"), "content": item.get("content")})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "content": item.get("output")})
        else:
            messages.append({"role": "assistant", "content": None})
    return {**body, "messages": messages, "max_tokens": body.get("max_output_tokens")}


def _tool_for(body: dict[str, Any], said: str) -> tuple[str, str] | None:
    tools = body.get("tools") or []
    if not tools:
        return None
    choice = body.get("tool_choice")
    forced = None
    if isinstance(choice, dict):
        forced = choice.get("name") or (choice.get("function") or {}).get("name")
    if forced is None and "use tool" not in said.lower():
        return None
    first = tools[0]
    name = forced or first.get("name") or (first.get("function") or {}).get("name")
    return str(name), json.dumps({"text": said})


# ---- OpenAI --------------------------------------------------------------------------------


def openai_usage(reply: Reply, cached: int) -> dict[str, Any]:
    prompt = reply.input_tokens + cached
    return {
        "prompt_tokens": prompt, "completion_tokens": reply.output_tokens,
        "total_tokens": prompt + reply.output_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def openai_json(body: dict[str, Any], reply: Reply, cached: int, rid: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.tool is not None:
        message["tool_calls"] = [{"id": "call_0", "type": "function",
                                  "function": {"name": reply.tool[0], "arguments": reply.tool[1]}}]
    return {
        "id": rid, "object": "chat.completion", "created": 1700000000, "model": body.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish}],
        "usage": openai_usage(reply, cached),
    }


def openai_sse(body: dict[str, Any], reply: Reply, cached: int, rid: str) -> list[bytes]:
    with_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        data: dict[str, Any] = {
            "id": rid, "object": "chat.completion.chunk", "created": 1700000000,
            "model": body.get("model"),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if with_usage:
            data["usage"] = None
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(reply.words)]
    if reply.tool is not None:
        name, args = reply.tool
        half = len(args) // 2
        events.append(chunk({"tool_calls": [{"index": 0, "id": "call_0", "type": "function",
                                             "function": {"name": name, "arguments": ""}}]}))
        for piece in (args[:half], args[half:]):
            events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    events.append(chunk({}, reply.finish))
    if with_usage:
        last: dict[str, Any] = {
            "id": rid, "object": "chat.completion.chunk", "created": 1700000000,
            "model": body.get("model"), "choices": [], "usage": openai_usage(reply, cached)}
        events.append(b"data: " + json.dumps(last).encode() + b"\n\n")
    return [*events, b"data: [DONE]\n\n"]


def openai_error(status: int, message: str, err_type: str | None, code: str | None) -> dict[str, Any]:
    default_type, default_code = OPENAI_ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return {"error": {"message": message, "type": err_type or default_type, "param": None,
                      "code": code if code is not None else default_code}}


def openai_stream_error() -> bytes:
    error = {"message": "The server had an error while processing your request.",
             "type": "server_error", "param": None, "code": None}
    return b"data: " + json.dumps({"error": error}).encode() + b"\n\n"


# ---- OpenAI Responses ----------------------------------------------------------------------


def responses_usage(reply: Reply, cached: int) -> dict[str, Any]:
    prompt = reply.input_tokens + cached
    return {
        "input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": reply.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + reply.output_tokens,
    }


def _message_item(rid: str, text: str, status: str) -> dict[str, Any]:
    return {"type": "message", "id": f"msg_{rid}", "role": "assistant", "status": status,
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def _call_item(reply: Reply, rid: str, arguments: str, status: str) -> dict[str, Any]:
    assert reply.tool is not None
    return {"type": "function_call", "id": f"fc_{rid}", "call_id": "call_0",
            "name": reply.tool[0], "arguments": arguments, "status": status}


def responses_json(body: dict[str, Any], reply: Reply, cached: int, rid: str) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if reply.words:
        output.append(_message_item(rid, reply.text, "completed"))
    if reply.tool is not None:
        output.append(_call_item(reply, rid, reply.tool[1], "completed"))
    incomplete = reply.finish == "length"
    return {
        "id": rid, "object": "response", "created_at": 1700000000,
        "status": "incomplete" if incomplete else "completed",
        "completed_at": None if incomplete else 1700000001,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": body.get("instructions"), "model": body.get("model"),
        "max_output_tokens": body.get("max_output_tokens"), "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools", []),
        "top_p": body.get("top_p", 1.0), "usage": responses_usage(reply, cached),
    }


def responses_sse(body: dict[str, Any], reply: Reply, cached: int, rid: str) -> list[bytes]:
    final = responses_json(body, reply, cached, rid)
    events: list[tuple[str, dict[str, Any]]] = []
    start = final | {"status": "in_progress", "completed_at": None, "output": [],
                     "incomplete_details": None, "usage": None}
    events.append(("response.created", {"response": start}))
    events.append(("response.in_progress", {"response": start}))
    index = 0
    if reply.words:
        ids = {"item_id": f"msg_{rid}", "output_index": 0, "content_index": 0}
        empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        events.append(("response.output_item.added", {
            "output_index": 0, "item": _message_item(rid, "", "in_progress") | {"content": []}}))
        events.append(("response.content_part.added", {**ids, "part": empty}))
        for i, word in enumerate(reply.words):
            events.append(("response.output_text.delta", {
                **ids, "delta": word if i == 0 else " " + word, "logprobs": []}))
        events.append(("response.output_text.done", {**ids, "text": reply.text, "logprobs": []}))
        events.append(("response.content_part.done", {**ids, "part": empty | {"text": reply.text}}))
        events.append(("response.output_item.done", {"output_index": 0, "item": final["output"][0]}))
        index = 1
    if reply.tool is not None:
        args = reply.tool[1]
        half = len(args) // 2
        ids = {"item_id": f"fc_{rid}", "output_index": index}
        events.append(("response.output_item.added", {
            "output_index": index, "item": _call_item(reply, rid, "", "in_progress")}))
        for piece in (args[:half], args[half:]):
            events.append(("response.function_call_arguments.delta", {**ids, "delta": piece}))
        events.append(("response.function_call_arguments.done", {**ids, "arguments": args}))
        events.append(("response.output_item.done", {
            "output_index": index, "item": _call_item(reply, rid, args, "completed")}))
    end = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    events.append((end, {"response": final}))
    return [sse_event(name, {"type": name, **data, "sequence_number": n})
            for n, (name, data) in enumerate(events)]


def responses_stream_error() -> bytes:
    return sse_event("error", {"type": "error", "code": "server_error",
                               "message": "The server had an error while processing your request.",
                               "param": None, "sequence_number": 0})


# ---- Anthropic -----------------------------------------------------------------------------

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def sse_event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def anthropic_json(body: dict[str, Any], reply: Reply, cached: int, rid: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.words:
        content.append({"type": "text", "text": reply.text})
    if reply.tool is not None:
        content.append({"type": "tool_use", "id": "toolu_0", "name": reply.tool[0],
                        "input": json.loads(reply.tool[1])})
    return {
        "id": rid, "type": "message", "role": "assistant", "content": content,
        "model": body.get("model"), "stop_reason": STOP_REASONS[reply.finish],
        "stop_sequence": None,
        "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
                  "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0},
    }


def anthropic_sse(body: dict[str, Any], reply: Reply, cached: int, rid: str) -> list[bytes]:
    start = anthropic_json(body, reply, cached, rid) | {"content": [], "stop_reason": None}
    start["usage"] = start["usage"] | {"output_tokens": 1}
    events = [sse_event("message_start", {"type": "message_start", "message": start})]
    index = 0
    if reply.words:
        events.append(sse_event("content_block_start", {
            "type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}))
        events.append(sse_event("ping", {"type": "ping"}))
        for i, word in enumerate(reply.words):
            events.append(sse_event("content_block_delta", {
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": word if i == 0 else " " + word}}))
        events.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        index = 1
    if reply.tool is not None:
        name, args = reply.tool
        events.append(sse_event("content_block_start", {
            "type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": "toolu_0", "name": name, "input": {}}}))
        half = len(args) // 2
        for piece in (args[:half], args[half:]):
            events.append(sse_event("content_block_delta", {
                "type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": piece}}))
        events.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(sse_event("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": STOP_REASONS[reply.finish], "stop_sequence": None},
        "usage": {"output_tokens": reply.output_tokens}}))
    events.append(sse_event("message_stop", {"type": "message_stop"}))
    return events


def anthropic_error(status: int, message: str, err_type: str | None) -> dict[str, Any]:
    kind = err_type or ANTHROPIC_ERRORS.get(
        status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message},
            "request_id": "req_fake"}


def anthropic_stream_error() -> bytes:
    return sse_event("error", {"type": "error",
                               "error": {"type": "overloaded_error", "message": "Overloaded"}})
