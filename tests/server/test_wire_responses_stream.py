"""server/wire/responses_stream: Responses SSE events against the openai SDK's event
models, and the SDK's own clients consuming our stream and object end to end."""

from __future__ import annotations

import json
import typing
from typing import Any

import pytest
from openai._models import construct_type
from openai.types.responses import Response
from openai.types.responses.response_error import ResponseError
from openai.types.responses.response_stream_event import ResponseStreamEvent
from pydantic import TypeAdapter

from core import errors
from core.errors import GatewayError, RateLimited, UpstreamError
from core.model import Completion, StreamEnd, TextDelta, ToolCallDelta, Usage, UsageReport
from server.wire.responses import ResponsesStreamEncoder, parse_responses_request, response_object

STREAM_EVENT = TypeAdapter(ResponseStreamEvent)
# The codes the SDK's `ResponseError.code` Literal allows (a strict reader's vocabulary).
SDK_CODES = frozenset(typing.get_args(ResponseError.model_fields["code"].annotation))
# Every concrete gateway error, one instance each (every code a stream can fail with).
ALL_ERRORS = [
    cls("it failed")
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, GatewayError)
]
USAGE = Usage(input_tokens=10, output_tokens=5, cached_input_tokens=3, reasoning_tokens=2)


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4.1", "input": "Hello", **extra}



def strictly_valid(name: str, data: dict[str, Any]) -> bool:
    """Whether the SDK's strict models accept the event: all do, but a `response.failed`
    whose gateway code is outside the SDK's Literal list (parsed leniently, see below)."""
    return name != "response.failed" or data["response"]["error"]["code"] in SDK_CODES


def run_stream(
    events: list[Any], *, fail: Any = None, request_id: str | None = None
) -> list[tuple[str, dict[str, Any]]]:
    encoder = ResponsesStreamEncoder(
        response_id="resp_s", created_at=1, request=parse_responses_request(body()),
        request_id=request_id,
    )  # fmt: skip
    frames = encoder.start()
    for event in events:
        frames += encoder.on_event(event)
    if fail is not None:
        frames += encoder.fail(fail)
    else:
        frames += encoder.finish(usage=None, gateway={"cost_usd": "0.2"}, finish_reason=None)
    assert encoder.finish() == [] and encoder.fail(UpstreamError("x")) == []
    for n, (name, data) in enumerate(frames):
        json.dumps(data)
        assert data["type"] == name and data["sequence_number"] == n
        if strictly_valid(name, data):
            assert STREAM_EVENT.validate_python(data).type == name
        parsed = construct_type(type_=ResponseStreamEvent, value=data)  # as the SDK reads streams
        assert getattr(parsed, "type", None) == name
    return frames


def test_text_stream_order_and_final_response() -> None:
    frames = run_stream(
        [TextDelta("Hel"), TextDelta(""), TextDelta("lo"), UsageReport(USAGE), StreamEnd("stop")]
    )
    assert [name for name, _ in frames] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed",
    ]  # fmt: skip
    assert frames[6][1]["text"] == "Hello"
    final = Response.model_validate(frames[-1][1]["response"])
    assert final.output_text == "Hello" and final.status == "completed"
    assert final.usage is not None and final.usage.total_tokens == USAGE.total_tokens
    assert frames[-1][1]["response"]["gateway"] == {"cost_usd": "0.2"}


def test_tool_call_stream() -> None:
    frames = run_stream([
        TextDelta("Checking"),
        ToolCallDelta(0, "call_1", "lookup", '{"q":'),
        ToolCallDelta(0, arguments='"x"}'),
        ToolCallDelta(1, "call_2", "lookup", "{}"),
        StreamEnd("tool_calls"),
    ])  # fmt: skip
    names = [name for name, _ in frames]
    assert names.count("response.output_item.added") == 3
    assert names.count("response.function_call_arguments.delta") == 3
    done = [d for n, d in frames if n == "response.function_call_arguments.done"]
    assert [d["arguments"] for d in done] == ['{"q":"x"}', "{}"]
    final = Response.model_validate(frames[-1][1]["response"])
    assert [item.type for item in final.output] == ["message", "function_call", "function_call"]
    assert final.output[1].call_id == "call_1"  # type: ignore[union-attr]


def test_empty_answer_still_has_a_message_item() -> None:
    frames = run_stream([StreamEnd("stop")])
    final = Response.model_validate(frames[-1][1]["response"])
    assert final.output_text == "" and len(final.output) == 1


def test_length_ends_with_response_incomplete() -> None:
    frames = run_stream([TextDelta("a"), StreamEnd("length")])
    assert frames[-1][0] == "response.incomplete"
    assert frames[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_failure_sends_error_then_response_failed() -> None:
    frames = run_stream([TextDelta("partial")], fail=UpstreamError("provider died"))
    (name, error), (last, failed) = frames[-2:]
    assert name == "error" and error["code"] == "upstream_error"
    assert error["message"] == "provider died"
    assert last == "response.failed" and failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["message"] == "provider died"


@pytest.mark.parametrize("error", ALL_ERRORS, ids=lambda e: type(e).__name__)
def test_failed_code_is_the_error_events_code_with_the_request_id(error: GatewayError) -> None:
    frames = run_stream([TextDelta("partial")], fail=error, request_id="client-7")
    (name, event), (last, failed) = frames[-2:]
    assert (name, last) == ("error", "response.failed")
    assert event["code"] == failed["response"]["error"]["code"] == error.code
    assert event["request_id"] == failed["response"]["error"]["request_id"] == "client-7"
    lenient = construct_type(type_=ResponseStreamEvent, value=failed)
    assert lenient.response.error.code == error.code  # type: ignore[union-attr]
    assert strictly_valid(last, failed) == (error.code in SDK_CODES)


def test_a_code_in_the_sdk_vocabulary_is_strictly_valid() -> None:
    frames = run_stream([], fail=RateLimited("slow down"))
    failed = Response.model_validate(frames[-1][1]["response"])
    assert failed.error is not None and failed.error.code == "rate_limit_exceeded"


def sse(frames: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in frames)


def test_the_openai_sdk_consumes_the_stream_and_the_object() -> None:
    import httpx
    import openai

    frames = run_stream([TextDelta("Hi "), ToolCallDelta(0, "c1", "f", "{}"), TextDelta("you")])
    whole = response_object(
        response_id="resp_w", created_at=1, model="gpt-4.1", gateway=None, error=None,
        completion=Completion("Hello", "stop", USAGE), status="completed",
        request=parse_responses_request(body()),
    )  # fmt: skip

    def answer(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content).get("stream"):
            headers = {"content-type": "text/event-stream"}
            return httpx.Response(200, content=sse(frames), headers=headers)
        return httpx.Response(200, json=whole)

    client = openai.OpenAI(
        api_key="k", base_url="http://gw/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(answer)),
    )  # fmt: skip
    assert client.responses.create(model="gpt-4.1", input="x").output_text == "Hello"
    with client.responses.stream(model="gpt-4.1", input="x") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["Hi ", "you"] and final.output_text == "Hi you"
