"""Anthropic Messages answers: `Completion` -> Message, stream events -> Messages SSE
events, and `GatewayError` -> Anthropic's error body.

Owns: the shapes the official `anthropic` SDK parses on the `/v1/messages` façade.

Rules:
- Pure: ids are arguments; the encoder holds only what it has seen.
- Stop reasons: stop -> end_turn, length -> max_tokens, tool_calls -> tool_use,
  content_filter -> refusal. (A matched stop sequence is reported as end_turn: the core
  does not say which sequence matched.)
- Usage: `input_tokens` is the input that was neither read from nor written to a cache
  (Anthropic's meaning); `cache_read_input_tokens` / `cache_creation_input_tokens` hold
  the rest. In a stream, `message_delta.usage` is cumulative (the whole answer).
- Tool-call arguments become `input` objects; `""` is `{}`, and text that is not a JSON
  object is kept as `{"_raw_arguments": text}` rather than dropped.
- Stream order: message_start; per block content_block_start / _delta... / _stop (text
  blocks get `text_delta`, tool_use blocks `input_json_delta`; a new block closes the
  open one); message_delta (stop_reason, usage); message_stop. A failure is one
  `event: error` with the error body. An optional `gateway` object rides on the message
  (whole answers) and on message_delta (streams).
"""

from __future__ import annotations

import json
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
Frames = list[tuple[str, Json]]

STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def anthropic_error_body(error: GatewayError, request_id: str | None = None) -> Json:
    """`{"type": "error", "error": {"type", "message"}, "request_id"}` (Anthropic's shape,
    its request id beside the error), the type chosen by HTTP status."""
    return {
        "type": "error",
        "error": {"type": anthropic_error_type(error.status), "message": error.message},
        "request_id": request_id,
    }


def usage_object(usage: Usage) -> Json:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cached_input_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
    }


def tool_input(arguments: str) -> Json:
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        return {"_raw_arguments": arguments}
    return value if isinstance(value, dict) else {"_raw_arguments": arguments}


def message_object(
    *,
    message_id: str,
    model: str,
    completion: Completion,
    gateway: Mapping[str, Any] | None = None,
) -> Json:
    """One whole answer as an Anthropic Message."""
    content: list[Json] = []
    if completion.text:
        content.append({"type": "text", "text": completion.text})
    for call in completion.tool_calls:
        content.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": tool_input(call.arguments),
            }
        )
    body: Json = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": model,
        "stop_reason": STOP_REASONS[completion.finish_reason],
        "stop_sequence": None,
        "usage": usage_object(completion.usage),
    }
    if gateway is not None:
        body["gateway"] = dict(gateway)
    return body


@define
class AnthropicStreamEncoder:
    """Turns one answer's stream events into `(event_name, data)` pairs."""

    message_id: str
    model: str
    input_tokens: int = 0  # best known at the start; the final count rides on message_delta
    request_id: str | None = None  # the id the client sees, in the error event
    _blocks: int = field(default=0, init=False)  # content blocks opened so far
    _open: int | None = field(default=None, init=False)  # index of the open block
    _open_is_text: bool = field(default=False, init=False)
    _tool_blocks: dict[int, int] = field(factory=dict, init=False)  # tool index -> block
    _usage: Usage | None = field(default=None, init=False)
    _finish_reason: FinishReason | None = field(default=None, init=False)
    _done: bool = field(default=False, init=False)

    def start(self) -> Frames:
        message: Json = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_object(Usage(input_tokens=self.input_tokens)),
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _close(self) -> Frames:
        if self._open is None:
            return []
        index, self._open = self._open, None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _begin(self, block: Json, is_text: bool) -> Frames:
        frames = self._close()
        self._open, self._open_is_text = self._blocks, is_text
        self._blocks += 1
        data = {"type": "content_block_start", "index": self._open, "content_block": block}
        return [*frames, ("content_block_start", data)]

    @staticmethod
    def _delta(index: int, delta: Json) -> tuple[str, Json]:
        return "content_block_delta", {
            "type": "content_block_delta",
            "index": index,
            "delta": delta,
        }

    def on_event(self, event: StreamEvent) -> Frames:
        if self._done:
            return []
        if isinstance(event, TextDelta) and event.text:
            frames: Frames = []
            if self._open is None or not self._open_is_text:
                frames = self._begin({"type": "text", "text": ""}, True)
            delta = {"type": "text_delta", "text": event.text}
            return [*frames, self._delta(self._blocks - 1, delta)]  # the open block is the last
        if isinstance(event, ToolCallDelta):
            frames = []
            if event.index not in self._tool_blocks:
                call_id = event.id or f"toolu_{self.message_id}_{event.index}"
                block = {"type": "tool_use", "id": call_id, "name": event.name or "", "input": {}}
                frames = self._begin(block, False)
                self._tool_blocks[event.index] = self._blocks - 1
            if event.arguments:
                delta = {"type": "input_json_delta", "partial_json": event.arguments}
                frames.append(self._delta(self._tool_blocks[event.index], delta))
            return frames
        if isinstance(event, UsageReport):
            self._usage = event.usage
        elif isinstance(event, StreamEnd):
            self._finish_reason = event.finish_reason
        return []

    def finish(
        self,
        usage: Usage | None = None,
        gateway: Mapping[str, Any] | None = None,
        finish_reason: FinishReason | None = None,
    ) -> Frames:
        """Close the open block, then message_delta (stop reason, usage) and message_stop."""
        if self._done:
            return []
        self._done = True
        reason = (
            finish_reason or self._finish_reason or ("tool_calls" if self._tool_blocks else "stop")
        )
        final = usage if usage is not None else self._usage or Usage(input_tokens=self.input_tokens)
        delta: Json = {
            "type": "message_delta",
            "delta": {"stop_reason": STOP_REASONS[reason], "stop_sequence": None},
            "usage": usage_object(final),
        }
        if gateway is not None:
            delta["gateway"] = dict(gateway)
        return [
            *self._close(),
            ("message_delta", delta),
            ("message_stop", {"type": "message_stop"}),
        ]

    def error(self, error: GatewayError) -> Frames:
        """A mid-stream failure: one `event: error`; nothing follows it."""
        if self._done:
            return []
        self._done = True
        return [("error", anthropic_error_body(error, self.request_id))]

    fail = error
