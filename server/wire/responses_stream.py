"""The unified API's stream: core `StreamEvent`s -> OpenAI Responses SSE events.

Owns: `ResponsesStreamEncoder`, a pure object that turns one answer's stream events into
`(event_name, data)` pairs, in the order the `openai` SDK's `client.responses.stream()`
expects:

    start():     response.created, response.in_progress
    on_event():  response.output_item.added + response.content_part.added (before the
                 first text), response.output_text.delta per text piece;
                 response.output_item.added (function_call) + ...arguments.delta per
                 tool-call piece; nothing for usage reports and the stream end
    finish():    per open item, in output order: output_text.done, content_part.done,
                 output_item.done / function_call_arguments.done, output_item.done;
                 then response.completed (or response.incomplete when cut by the limit)
    fail():      error {code, message, param, request_id}, then response.failed, whose
                 `response.error` has the same code and request id

Rules:
- Every event's data has `type` equal to its name and a `sequence_number` that grows by
  one from 0. `output_index` is the position in the final `output` list.
- The encoder holds only what it has seen (text, tool arguments, usage, finish reason);
  no clock and no I/O. After `finish` or `fail` it produces nothing more.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import define, field

from core.errors import GatewayError
from core.model import (
    FinishReason,
    GatewayRequest,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageReport,
)
from server.wire.responses_object import (
    INCOMPLETE_REASONS,
    Json,
    call_item,
    call_item_id,
    message_item,
    message_item_id,
    response_body,
    text_part,
)

Frames = list[tuple[str, Json]]


@define
class _Call:
    output_index: int
    item_id: str
    call_id: str
    name: str
    arguments: str = ""


@define
class ResponsesStreamEncoder:
    response_id: str
    created_at: int
    request: GatewayRequest
    model: str | None = None  # defaults to request.model
    request_id: str | None = None  # the id the client sees, in every error it is sent
    _seq: int = field(default=0, init=False)
    _next_index: int = field(default=0, init=False)
    _text: list[str] = field(factory=list, init=False)
    _text_index: int | None = field(default=None, init=False)
    _calls: dict[int, _Call] = field(factory=dict, init=False)
    _usage: Usage | None = field(default=None, init=False)
    _finish_reason: FinishReason | None = field(default=None, init=False)
    _done: bool = field(default=False, init=False)

    # -- helpers -------------------------------------------------------------------------

    def _event(self, kind: str, /, **data: Any) -> tuple[str, Json]:
        frame = (kind, {"type": kind, "sequence_number": self._seq, **data})
        self._seq += 1
        return frame

    def _snapshot(
        self,
        status: str,
        *,
        usage: Usage | None = None,
        error: GatewayError | None = None,
        reason: str | None = None,
        gateway: Mapping[str, Any] | None = None,
        item_status: str = "in_progress",
    ) -> Json:
        return response_body(
            response_id=self.response_id,
            created_at=self.created_at,
            model=self.model or self.request.model,
            request=self.request,
            status=status,
            output=self._output(item_status),
            usage=usage,
            error=error,
            incomplete_reason=reason,
            gateway=gateway,
            request_id=self.request_id,
        )

    def _output(self, status: str) -> list[Json]:
        items: list[tuple[int, Json]] = []
        if self._text_index is not None:
            item = message_item(message_item_id(self.response_id), "".join(self._text), status)
            items.append((self._text_index, item))
        for call in self._calls.values():
            tool = ToolCall(call.call_id, call.name, call.arguments)
            items.append((call.output_index, call_item(call.item_id, tool, status)))
        return [item for _, item in sorted(items, key=lambda pair: pair[0])]

    def _open_message(self) -> Frames:
        self._text_index = self._next_index
        self._next_index += 1
        item_id = message_item_id(self.response_id)
        return [
            self._event(
                "response.output_item.added",
                output_index=self._text_index,
                item=message_item(item_id, None, "in_progress"),
            ),
            self._event(
                "response.content_part.added",
                item_id=item_id,
                output_index=self._text_index,
                content_index=0,
                part=text_part(""),
            ),
        ]

    # -- the four calls ------------------------------------------------------------------

    def start(self) -> Frames:
        snapshot = self._snapshot("in_progress")
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def on_event(self, event: StreamEvent) -> Frames:
        if self._done:
            return []
        if isinstance(event, TextDelta):
            return self._on_text(event.text)
        if isinstance(event, ToolCallDelta):
            return self._on_tool(event)
        if isinstance(event, UsageReport):
            self._usage = event.usage
        elif isinstance(event, StreamEnd):
            self._finish_reason = event.finish_reason
        return []

    def _on_text(self, text: str) -> Frames:
        if not text:
            return []
        frames = self._open_message() if self._text_index is None else []
        self._text.append(text)
        frames.append(
            self._event(
                "response.output_text.delta",
                item_id=message_item_id(self.response_id),
                output_index=self._text_index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return frames

    def _on_tool(self, event: ToolCallDelta) -> Frames:
        frames: Frames = []
        call = self._calls.get(event.index)
        if call is None:
            n = len(self._calls)
            item_id = call_item_id(self.response_id, n)
            call = _Call(self._next_index, item_id, event.id or f"call_{item_id}", event.name or "")
            self._next_index += 1
            self._calls[event.index] = call
            tool = ToolCall(call.call_id, call.name, "")
            frames.append(
                self._event(
                    "response.output_item.added",
                    output_index=call.output_index,
                    item=call_item(item_id, tool, "in_progress"),
                )
            )
        elif event.name and not call.name:
            call.name = event.name
        if event.arguments:
            call.arguments += event.arguments
            frames.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=call.item_id,
                    output_index=call.output_index,
                    delta=event.arguments,
                )
            )
        return frames

    def finish(
        self,
        usage: Usage | None = None,
        gateway: Mapping[str, Any] | None = None,
        finish_reason: FinishReason | None = None,
    ) -> Frames:
        """Close every open item, then `response.completed` (or `.incomplete`)."""
        if self._done:
            return []
        self._done = True
        reason = INCOMPLETE_REASONS.get(finish_reason or self._finish_reason or "stop")
        status = "incomplete" if reason else "completed"
        item_status = "incomplete" if reason else "completed"
        frames: Frames = []
        if self._text_index is None and not self._calls:
            frames += self._open_message()
        closing: list[tuple[int, Frames]] = []
        if self._text_index is not None:
            closing.append((self._text_index, self._close_message(item_status)))
        for call in self._calls.values():
            closing.append((call.output_index, self._close_call(call)))
        for _, group in sorted(closing, key=lambda pair: pair[0]):
            frames += group
        final = self._snapshot(
            status,
            usage=usage if usage is not None else self._usage or Usage(),
            reason=reason,
            gateway=gateway,
            item_status=item_status,
        )
        frames.append(self._event(f"response.{status}", response=final))
        return frames

    def _close_message(self, status: str) -> Frames:
        text = "".join(self._text)
        item_id = message_item_id(self.response_id)
        where = {"item_id": item_id, "output_index": self._text_index, "content_index": 0}
        return [
            self._event("response.output_text.done", **where, text=text, logprobs=[]),
            self._event("response.content_part.done", **where, part=text_part(text)),
            self._event(
                "response.output_item.done",
                output_index=self._text_index,
                item=message_item(item_id, text, status),
            ),
        ]

    def _close_call(self, call: _Call) -> Frames:
        tool = ToolCall(call.call_id, call.name, call.arguments)
        return [
            self._event(
                "response.function_call_arguments.done",
                item_id=call.item_id,
                output_index=call.output_index,
                name=call.name,
                arguments=call.arguments,
            ),
            self._event(
                "response.output_item.done",
                output_index=call.output_index,
                item=call_item(call.item_id, tool, "completed"),
            ),
        ]

    def fail(self, error: GatewayError, gateway: Mapping[str, Any] | None = None) -> Frames:
        """An `error` event, then `response.failed` carrying what was produced so far."""
        if self._done:
            return []
        self._done = True
        failed = self._snapshot(
            "failed", usage=self._usage, error=error, gateway=gateway, item_status="incomplete"
        )
        return [
            self._event(
                "error",
                code=error.code,
                message=error.message,
                param=error.param,
                request_id=self.request_id,
            ),
            self._event("response.failed", response=failed),
        ]
