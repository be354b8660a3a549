"""Anthropic Messages codec: request mapping table, response decoding, recorded stream."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.providers.anthropic_codec import (
    EventDecoder,
    decode_response,
    encode_messages,
    encode_request,
)
from adapters.providers.base import ProviderError
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
    id="anthropic/claude", model="claude", provider="anthropic", upstream_model="claude-x",
    price=Price(Decimal(3), Decimal(15)), context_window=200000, max_output_tokens=8192,
)


def msg(role: str, text: str = "", **kw: object) -> Message:
    return Message(role, (TextPart(text),) if text else (), **kw)  # type: ignore[arg-type]


def test_system_extraction_and_role_merging() -> None:
    system, turns = encode_messages([
        msg("system", "rule one"), msg("user", "a"), msg("user", "b"),
        msg("system", "rule two"), msg("assistant", "c"), msg("assistant", "d"), msg("user", "e"),
    ])
    assert system == "rule one\n\nrule two"
    assert turns == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "c"}, {"type": "text", "text": "d"}]},
        {"role": "user", "content": [{"type": "text", "text": "e"}]},
    ]


def test_tool_calls_and_results_mapping() -> None:
    system, turns = encode_messages([
        msg("user", "weather?"),
        Message("assistant", (TextPart("checking"),), tool_calls=(
            ToolCall("toolu_1", "weather", '{"city": "Paris"}'),
            ToolCall("toolu_2", "time", "not json"),
        )),
        msg("tool", "sunny", tool_call_id="toolu_1"),
        msg("tool", "noon", tool_call_id="toolu_2"),
        msg("user", "thanks"),
    ])
    assert system is None
    assert turns[1] == {"role": "assistant", "content": [
        {"type": "text", "text": "checking"},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "time", "input": {}},
    ]}
    assert turns[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "noon"},
        {"type": "text", "text": "thanks"},
    ]}
    assert len(turns) == 3


def test_tool_results_come_first_in_a_merged_user_turn() -> None:
    _, turns = encode_messages([msg("user", "note"), msg("tool", "r", tool_call_id="t")])
    assert [b["type"] for b in turns[0]["content"]] == ["tool_result", "text"]


def test_images_and_empty_text() -> None:
    _, turns = encode_messages([Message("user", (
        TextPart("  "), ImagePart("data:image/png;base64,iVBORw0K"), ImagePart("https://x/y.jpg"),
    ))])
    assert turns[0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
        {"type": "image", "source": {"type": "url", "url": "https://x/y.jpg"}},
    ]


def test_request_fields() -> None:
    request = GatewayRequest(
        model="claude", messages=(msg("system", "sys"), msg("user", "hi")), temperature=1.7,
        top_p=0.5, stop=("END", "STOP"), tools=(Tool("f", "does f", {"type": "object"}), Tool("g")),
        tool_choice=ToolChoice("required"), parallel_tool_calls=False, user="u-9",
        response_format={"type": "json_object"}, metadata={"mock_scenario": "x"},
    )
    body = encode_request(DEP, request, stream=True)
    assert body["model"] == "claude-x" and body["system"] == "sys"
    assert body["max_tokens"] == 4096  # min(deployment max 8192, 4096)
    assert body["temperature"] == 1.0 and body["top_p"] == 0.5
    assert body["stop_sequences"] == ["END", "STOP"]
    assert body["tools"] == [
        {"name": "f", "description": "does f", "input_schema": {"type": "object"}},
        {"name": "g", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["metadata"] == {"user_id": "u-9"} and body["stream"] is True
    assert "response_format" not in body


@pytest.mark.parametrize(("choice", "parallel", "wire"), [
    (ToolChoice("auto"), None, {"type": "auto"}),
    (ToolChoice("none"), False, {"type": "none"}),
    (ToolChoice("tool", "f"), None, {"type": "tool", "name": "f"}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    (None, None, None),
])
def test_tool_choice(choice: ToolChoice | None, parallel: bool | None, wire: object) -> None:
    request = GatewayRequest(model="c", messages=(msg("user", "x"),), tools=(Tool("f"),),
                             tool_choice=choice, parallel_tool_calls=parallel)
    assert encode_request(DEP, request, stream=False).get("tool_choice") == wire


def test_explicit_max_tokens_and_small_deployment_default() -> None:
    request = GatewayRequest(model="c", messages=(msg("user", "x"),), max_output_tokens=10)
    assert encode_request(DEP, request, stream=False)["max_tokens"] == 10
    small = Deployment(id="a/s", model="s", provider="anthropic", upstream_model="s",
                       price=DEP.price, context_window=1000, max_output_tokens=1024)
    bare = GatewayRequest(model="c", messages=(msg("user", "x"),))
    assert encode_request(small, bare, stream=False)["max_tokens"] == 1024


@pytest.mark.parametrize(("reason", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("tool_use", "tool_calls"), ("pause_turn", "stop"), ("refusal", "content_filter"),
    ("something_new", "stop"),
])
def test_decode_response(reason: str, finish: str) -> None:
    data = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"},
                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}}],
        "stop_reason": reason, "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 7, "cache_read_input_tokens": 100,
                  "cache_creation_input_tokens": 50},
    }
    completion = decode_response(data)
    assert completion.text == "Hello there" and completion.finish_reason == finish
    assert completion.tool_calls == (ToolCall("toolu_1", "f", json.dumps({"a": [1, 2]})),)
    assert completion.usage == Usage(input_tokens=11, output_tokens=7, cached_input_tokens=100,
                                     cache_write_tokens=50)
    assert completion.upstream_id == "msg_1"


def ev(name: str, data: dict[str, object]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


RECORDED = "".join([
    ev("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-x",
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 5,
                  "cache_creation_input_tokens": 0}}}),
    ev("content_block_start", {"type": "content_block_start", "index": 0,
                               "content_block": {"type": "text", "text": ""}}),
    ev("ping", {"type": "ping"}),
    ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                               "delta": {"type": "text_delta", "text": "Okay, "}}),
    ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                               "delta": {"type": "text_delta", "text": "checking ☀."}}),
    ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ev("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "toolu_9", "name": "weather", "input": {}}}),
    ev("content_block_delta", {"type": "content_block_delta", "index": 1,
                               "delta": {"type": "input_json_delta", "partial_json": ""}}),
    ev("content_block_delta", {"type": "content_block_delta", "index": 1,
                               "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
    ev("content_block_delta", {"type": "content_block_delta", "index": 1,
                               "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
    ev("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ev("future_event", {"type": "future_event", "x": 1}),
    ev("message_delta", {"type": "message_delta",
                         "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                         "usage": {"output_tokens": 42}}),
    ev("message_stop", {"type": "message_stop"}),
]).encode()

EXPECTED: list[StreamEvent] = [
    UsageReport(Usage(input_tokens=25, output_tokens=1, cached_input_tokens=5)),
    TextDelta("Okay, "),
    TextDelta("checking ☀."),
    ToolCallDelta(0, "toolu_9", "weather", ""),
    ToolCallDelta(0, None, None, ""),
    ToolCallDelta(0, None, None, '{"city": '),
    ToolCallDelta(0, None, None, '"Paris"}'),
    UsageReport(Usage(input_tokens=25, output_tokens=42, cached_input_tokens=5)),
    StreamEnd("tool_calls"),
]


def decode(pieces: list[bytes]) -> list[StreamEvent]:
    decoder = SSEStreamDecoder(EventDecoder())
    out: list[StreamEvent] = []
    for piece in pieces:
        out.extend(decoder.feed(piece))
    return out + decoder.close()


def test_recorded_stream_whole_and_byte_by_byte() -> None:
    assert decode([RECORDED]) == EXPECTED
    assert decode([RECORDED[i:i + 1] for i in range(len(RECORDED))]) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(RECORDED)), max_size=40))
def test_recorded_stream_any_split(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(RECORDED)]
    assert decode([RECORDED[a:b] for a, b in zip(points, points[1:], strict=False)]) == EXPECTED


def test_eof_before_message_stop_is_stream_cut() -> None:
    with pytest.raises(ProviderError) as info:
        decode([RECORDED[: RECORDED.index(b"event: message_stop")]])
    assert info.value.kind is FailureKind.STREAM_CUT


@pytest.mark.parametrize(("error_type", "kind"), [
    ("overloaded_error", FailureKind.OVERLOADED),
    ("rate_limit_error", FailureKind.RATE_LIMITED),
    ("api_error", FailureKind.SERVER_ERROR),
    ("invalid_request_error", FailureKind.BAD_REQUEST),
])
def test_error_event_mid_stream(error_type: str, kind: FailureKind) -> None:
    head = RECORDED[: RECORDED.index(b"event: content_block_stop")]
    error = ev("error", {"type": "error", "error": {"type": error_type, "message": "Overloaded"}})
    decoder = SSEStreamDecoder(EventDecoder())
    assert decoder.feed(head)[-1] == TextDelta("checking ☀.")
    with pytest.raises(ProviderError) as info:
        decoder.feed(error.encode())
    assert info.value.kind is kind and info.value.status is None


def test_malformed_event_is_stream_cut() -> None:
    decoder = SSEStreamDecoder(EventDecoder())
    with pytest.raises(ProviderError) as info:
        decoder.feed(b"event: content_block_delta\ndata: {\"index\": \n\n")
    assert info.value.kind is FailureKind.STREAM_CUT
