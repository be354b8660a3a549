"""OpenAI Chat Completions answers: `Completion` -> `chat.completion`, stream events ->
`chat.completion.chunk`s, and the mid-stream error payload.

Owns: the chat answer shapes the official `openai` SDK parses. Each answer carries the
gateway's `gateway` object (provider, deployment, attempts, cost): on the completion, and
on the last chunk of a stream.

Rules:
- Pure: ids and `created` are arguments. Every chunk of one stream has the same `id`.
- `usage.prompt_tokens` is the whole input, cached tokens included (OpenAI's meaning);
  `prompt_tokens_details.cached_tokens` says how many were cached.
- Stream order: a first chunk with `delta {role: "assistant", content: null}` (null, as
  OpenAI sends before a tool call: an empty string would be an empty text part to
  clients such as the AI SDK); content and
  tool-call deltas (`{index, id, type, function {name, arguments}}`); a final chunk with
  `finish_reason`; then, with `include_usage`, a chunk with `choices: []` and the usage
  (every earlier chunk then has `usage: null`). The caller adds `data: [DONE]`.
- A failure after the stream began is `error_chunk(error, request_id)` = `{"error": {...}}`; the
  `openai` SDK raises `APIError` on it. The stream then ends without `[DONE]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import define, field

from core.errors import GatewayError
from core.model import (
    Completion,
    FinishReason,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageReport,
)

Json = dict[str, Any]


def usage_object(usage: Usage) -> Json:
    return {
        "prompt_tokens": usage.total_input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cached_input_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def chat_completion(
    *,
    completion_id: str,
    created: int,
    model: str,
    completion: Completion,
    gateway: Mapping[str, Any] | None = None,
) -> Json:
    """One whole answer as a `chat.completion` object."""
    message: Json = {
        "role": "assistant",
        "content": completion.text if completion.text or not completion.tool_calls else None,
        "refusal": None,
        "annotations": [],
    }
    if completion.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in completion.tool_calls
        ]
    body: Json = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": usage_object(completion.usage),
    }
    if gateway is not None:
        body["gateway"] = dict(gateway)
    return body


def error_chunk(error: GatewayError, request_id: str | None = None) -> Json:
    """The payload of `data: {...}` that tells an SDK the stream failed: the HTTP error
    body's shape, request id included."""
    return {"error": {**error.to_body()["error"], "request_id": request_id}}


@define
class ChatStreamEncoder:
    """Turns one answer's stream events into chunk dicts (pure; holds the seen state)."""

    completion_id: str
    created: int
    model: str
    include_usage: bool = False
    _usage: Usage | None = field(default=None, init=False)
    _finish_reason: FinishReason | None = field(default=None, init=False)
    _tools_seen: set[int] = field(factory=set, init=False)
    _done: bool = field(default=False, init=False)

    def _chunk(self, delta: Json | None, finish_reason: str | None = None) -> Json:
        chunk: Json = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    @property
    def done(self) -> bool:
        """The final chunks were given: every later event gives nothing."""
        return self._done

    def text_chunk(self, text: str) -> Json:
        """The chunk of one piece of text (what `on_event` gives for a `TextDelta`)."""
        return self._chunk({"content": text})

    def start(self) -> list[Json]:
        return [self._chunk({"role": "assistant", "content": None})]

    def on_event(self, event: StreamEvent) -> list[Json]:
        if self._done:
            return []
        if isinstance(event, TextDelta):
            return [self.text_chunk(event.text)] if event.text else []
        if isinstance(event, ToolCallDelta):
            return [self._chunk({"tool_calls": [self._tool_delta(event)]})]
        if isinstance(event, UsageReport):
            self._usage = event.usage
        elif isinstance(event, StreamEnd):
            self._finish_reason = event.finish_reason
        return []

    def _tool_delta(self, event: ToolCallDelta) -> Json:
        function: Json = {"arguments": event.arguments}
        delta: Json = {"index": event.index}
        if event.index not in self._tools_seen:
            self._tools_seen.add(event.index)
            delta["id"] = event.id or f"call_{self.completion_id}_{event.index}"
            delta["type"] = "function"
            function["name"] = event.name or ""
        elif event.name:
            function["name"] = event.name
        delta["function"] = function
        return delta

    def finish(
        self,
        usage: Usage | None = None,
        gateway: Mapping[str, Any] | None = None,
        finish_reason: FinishReason | None = None,
    ) -> list[Json]:
        """The final chunk (finish_reason), then the usage chunk when asked for."""
        if self._done:
            return []
        self._done = True
        reason = (
            finish_reason or self._finish_reason or ("tool_calls" if self._tools_seen else "stop")
        )
        chunks = [self._chunk({}, reason)]
        if self.include_usage:
            usage_chunk = self._chunk(None)
            usage_chunk["usage"] = usage_object(
                usage if usage is not None else self._usage or Usage()
            )
            chunks.append(usage_chunk)
        if gateway is not None:
            chunks[-1]["gateway"] = dict(gateway)
        return chunks
