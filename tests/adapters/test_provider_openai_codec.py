"""OpenAI Chat codec: request encoding table, response decoding, recorded stream bytes."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.providers.base import ProviderError
from adapters.providers.openai_codec import ChunkDecoder, decode_response, encode_request
from adapters.providers.streaming import SSEStreamDecoder
from core.catalog import Deployment, Price
from core.model import (
    FailureKind,
    GatewayRequest,
    ImagePart,
    Message,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
    UsageReport,
)

DEP = Deployment(
    id="openai/gpt-4.1", model="gpt-4.1", provider="openai", upstream_model="gpt-4.1-2025",
    price=Price(Decimal(2), Decimal(8)), context_window=128000, max_output_tokens=32768,
)


def user(text: str) -> Message:
    return Message("user", (TextPart(text),))


def test_minimal_request() -> None:
    body = encode_request(DEP, GatewayRequest(model="gpt-4.1", messages=(user("hi"),)), stream=False)
    assert body == {"model": "gpt-4.1-2025", "messages": [{"role": "user", "content": "hi"}]}


def test_full_request_mapping() -> None:
    request = GatewayRequest(
        model="gpt-4.1",
        messages=(
            Message("system", (TextPart("be brief"),)),
            Message("user", (TextPart("what is this?"), ImagePart("https://x/cat.png", "low"))),
            Message("assistant", tool_calls=(ToolCall("call_1", "lookup", '{"q":"cat"}'),)),
            Message("tool", (TextPart("a cat"),), tool_call_id="call_1"),
        ),
        max_output_tokens=100, temperature=0.5, top_p=0.9, stop=("END",),
        tools=(Tool("lookup", "find things", {"type": "object"}),),
        tool_choice=ToolChoice("tool", "lookup"), parallel_tool_calls=False,
        response_format={"type": "json_object"}, user="u-1", metadata={"mock_scenario": "x"},
    )
    body = encode_request(DEP, request, stream=True)
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"cat"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
    ]
    assert body["max_completion_tokens"] == 100 and "max_tokens" not in body
    assert body["temperature"] == 0.5 and body["top_p"] == 0.9 and body["stop"] == ["END"]
    assert body["tools"] == [{"type": "function", "function": {
        "name": "lookup", "description": "find things", "parameters": {"type": "object"}}}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert body["parallel_tool_calls"] is False
    assert body["response_format"] == {"type": "json_object"} and body["user"] == "u-1"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert "metadata" not in body  # gateway metadata is never forwarded


@pytest.mark.parametrize(("choice", "wire"), [
    (ToolChoice("auto"), "auto"), (ToolChoice("none"), "none"), (ToolChoice("required"), "required"),
])
def test_tool_choice_modes(choice: ToolChoice, wire: str) -> None:
    request = GatewayRequest(model="m", messages=(user("x"),), tool_choice=choice)
    assert encode_request(DEP, request, stream=False)["tool_choice"] == wire


def test_compatible_length_field_and_no_parallel_without_tools() -> None:
    request = GatewayRequest(model="m", messages=(user("x"),), max_output_tokens=7,
                             parallel_tool_calls=True)
    body = encode_request(DEP, request, stream=False, max_tokens_field="max_tokens")
    assert body["max_tokens"] == 7 and "max_completion_tokens" not in body
    assert "parallel_tool_calls" not in body


def test_decode_response_with_tool_calls_and_usage() -> None:
    data = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4.1-2025",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
            "role": "assistant", "content": None, "refusal": None,
            "tool_calls": [{"id": "call_9", "type": "function",
                            "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                  "prompt_tokens_details": {"cached_tokens": 60},
                  "completion_tokens_details": {"reasoning_tokens": 5}},
    }
    completion = decode_response(data)
    assert completion.text == "" and completion.finish_reason == "tool_calls"
    assert completion.tool_calls == (ToolCall("call_9", "f", '{"a": 1}'),)
    assert completion.usage == Usage(input_tokens=40, output_tokens=20, cached_input_tokens=60,
                                     reasoning_tokens=5)
    assert (completion.upstream_id, completion.upstream_model) == ("chatcmpl-1", "gpt-4.1-2025")


def test_decode_response_text_and_unknown_finish() -> None:
    data = {"choices": [{"message": {"content": "hello"}, "finish_reason": "weird"}]}
    completion = decode_response(data)
    assert (completion.text, completion.finish_reason, completion.usage) == ("hello", "stop", Usage())
    with pytest.raises(ValueError):
        decode_response({"choices": []})


def chunk(delta: dict[str, object], finish: str | None = None) -> str:
    return json.dumps({"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1,
                       "model": "gpt-4.1", "choices": [{"index": 0, "delta": delta,
                                                        "logprobs": None, "finish_reason": finish}],
                       "usage": None})


# A recorded-shape stream: text, two tool calls (arguments in fragments), finish, usage, DONE.
RECORDED = "".join(f"data: {line}\n\n" for line in [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Let me "}),
    chunk({"content": "check."}),
    chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                           "function": {"name": "weather", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": " \"Paris\"}"}}]}),
    chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                           "function": {"name": "time", "arguments": "{}"}}]}),
    chunk({}, "tool_calls"),
    json.dumps({"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1,
                "model": "gpt-4.1", "choices": [],
                "usage": {"prompt_tokens": 50, "completion_tokens": 30, "total_tokens": 80,
                          "prompt_tokens_details": {"cached_tokens": 10, "audio_tokens": 0},
                          "completion_tokens_details": {"reasoning_tokens": 0}}}),
    "[DONE]",
]).encode()

EXPECTED: list[StreamEvent] = [
    TextDelta("Let me "),
    TextDelta("check."),
    ToolCallDelta(0, "call_a", "weather", ""),
    ToolCallDelta(0, None, None, '{"city":'),
    ToolCallDelta(0, None, None, ' "Paris"}'),
    ToolCallDelta(1, "call_b", "time", "{}"),
    UsageReport(Usage(input_tokens=40, output_tokens=30, cached_input_tokens=10)),
    StreamEnd("tool_calls"),
]


def decode(pieces: list[bytes], *, require_done: bool = True) -> list[StreamEvent]:
    decoder = SSEStreamDecoder(ChunkDecoder("openai", require_done=require_done))
    out: list[StreamEvent] = []
    for piece in pieces:
        out.extend(decoder.feed(piece))
    return out + decoder.close()


def test_recorded_stream_whole_and_byte_by_byte() -> None:
    assert decode([RECORDED]) == EXPECTED
    assert decode([RECORDED[i:i + 1] for i in range(len(RECORDED))]) == EXPECTED
    crlf = RECORDED.replace(b"\n", b"\r\n")
    assert decode([crlf]) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(RECORDED)), max_size=40))
def test_recorded_stream_any_split(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(RECORDED)]
    assert decode([RECORDED[a:b] for a, b in zip(points, points[1:], strict=False)]) == EXPECTED


def test_events_after_done_are_ignored() -> None:
    assert decode([RECORDED + b"data: " + chunk({"content": "late"}).encode() + b"\n\n"]) == EXPECTED


def test_cut_before_done_is_stream_cut() -> None:
    cut = RECORDED[: RECORDED.index(b"data: [DONE]")]
    with pytest.raises(ProviderError) as info:
        decode([cut])
    assert info.value.kind is FailureKind.STREAM_CUT
    # a lenient (compatible) decoder ends cleanly once a finish reason was seen
    assert decode([cut], require_done=False)[-1] == StreamEnd("tool_calls")
    with pytest.raises(ProviderError):
        decode([cut[: cut.index(b"check.")]], require_done=False)


@pytest.mark.parametrize(("payload", "kind"), [
    (b'data: {"error": {"message": "boom", "type": "server_error", "param": null, "code": null}}\n\n',
     FailureKind.SERVER_ERROR),
    (b'data: {"error": {"message": "too long", "type": "invalid_request_error", '
     b'"code": "context_length_exceeded"}}\n\n', FailureKind.CONTEXT_LENGTH),
    (b'data: {"error": {"message": "flagged", "type": "invalid_request_error", '
     b'"code": "content_filter"}}\n\n', FailureKind.CONTENT_FILTER),
    (b"data: {not json\n\n", FailureKind.STREAM_CUT),
    (b"data: [1, 2]\n\n", FailureKind.STREAM_CUT),
])
def test_mid_stream_errors(payload: bytes, kind: FailureKind) -> None:
    first = f"data: {chunk({'content': 'hi'})}\n\n".encode()
    decoder = SSEStreamDecoder(ChunkDecoder("openai"))
    assert decoder.feed(first) == [TextDelta("hi")]
    with pytest.raises(ProviderError) as info:
        decoder.feed(payload)
    assert info.value.kind is kind


def test_content_filter_finish_and_keepalive_comments() -> None:
    body = (b": keepalive\n\n" + f"data: {chunk({'content': 'x'})}\n\n".encode()
            + f"data: {chunk({}, 'content_filter')}\n\n".encode() + b"data: [DONE]\n\n")
    assert decode([body]) == [TextDelta("x"), StreamEnd("content_filter")]


def test_events_before_an_error_event_in_the_same_read_are_still_given() -> None:
    decoder = SSEStreamDecoder(ChunkDecoder())
    text = {"choices": [{"index": 0, "delta": {"content": " one"}, "finish_reason": None}]}
    error = {"error": {"message": "boom", "type": "server_error", "code": None}}
    got = decoder.feed(b"data: %s\n\ndata: %s\n\n" % (json.dumps(text).encode(), json.dumps(error).encode()))
    assert got == [TextDelta(" one")]
    assert isinstance(decoder.failure, ProviderError) and "boom" in decoder.failure.message
    with pytest.raises(ProviderError, match="boom"):  # never lost: the next feed raises it
        decoder.feed(b"")


def test_a_non_finite_number_in_a_chunk_is_a_cut_stream() -> None:
    with pytest.raises(ProviderError) as info:
        ChunkDecoder().on_event("", '{"choices": [], "usage": {"prompt_tokens": NaN}}')
    assert info.value.kind is FailureKind.STREAM_CUT
