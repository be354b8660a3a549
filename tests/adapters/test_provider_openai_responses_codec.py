"""OpenAI Responses codec: request encoding table, response decoding, recorded stream bytes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.providers.base import ProviderError
from adapters.providers.openai_responses_codec import (
    EventDecoder,
    decode_response,
    encode_request,
)
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


# ---- request -------------------------------------------------------------------------------


def test_minimal_request() -> None:
    body = encode_request(DEP, GatewayRequest(model="gpt-4.1", messages=(user("hi"),)), stream=False)
    assert body == {
        "model": "gpt-4.1-2025",
        "input": [{"type": "message", "role": "user",
                   "content": [{"type": "input_text", "text": "hi"}]}],
        "store": False,
    }


def test_full_request_mapping() -> None:
    request = GatewayRequest(
        model="gpt-4.1",
        messages=(
            Message("system", (TextPart("be brief"),)),
            Message("system", (TextPart("be kind"),)),
            Message("user", (TextPart("what is this?"), ImagePart("https://x/cat.png", "low"),
                             ImagePart("data:image/png;base64,AAAA"))),
            Message("assistant", (TextPart("Let me look."),),
                    tool_calls=(ToolCall("call_1", "lookup", '{"q":"cat"}'),
                                ToolCall("call_2", "time", "{}"))),
            Message("tool", (TextPart("a cat"),), tool_call_id="call_1"),
            Message("tool", (TextPart("noon"),), tool_call_id="call_2"),
            Message("assistant", (TextPart("It is a cat."),)),
            user("thanks"),
        ),
        max_output_tokens=100, temperature=0.5, top_p=0.9, stop=("END",),
        tools=(Tool("lookup", "find things", {"type": "object"}), Tool("time")),
        tool_choice=ToolChoice("tool", "lookup"), parallel_tool_calls=False,
        user="u-1", metadata={"mock_scenario": "x"},
    )
    body = encode_request(DEP, request, stream=True)
    assert body["instructions"] == "be brief\n\nbe kind"
    assert body["input"] == [
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": "https://x/cat.png", "detail": "low"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"},
        ]},
        {"type": "message", "role": "assistant", "content": "Let me look."},
        {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": '{"q":"cat"}'},
        {"type": "function_call", "call_id": "call_2", "name": "time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "a cat"},
        {"type": "function_call_output", "call_id": "call_2", "output": "noon"},
        {"type": "message", "role": "assistant", "content": "It is a cat."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "thanks"}]},
    ]
    assert body["tools"] == [
        {"type": "function", "name": "lookup", "description": "find things",
         "parameters": {"type": "object"}, "strict": False},
        {"type": "function", "name": "time",
         "parameters": {"type": "object", "properties": {}}, "strict": False},
    ]
    assert body["tool_choice"] == {"type": "function", "name": "lookup"}
    assert body["parallel_tool_calls"] is False
    assert body["max_output_tokens"] == 100
    assert body["temperature"] == 0.5 and body["top_p"] == 0.9 and body["user"] == "u-1"
    assert body["stream"] is True and body["store"] is False
    # no Chat-only or gateway-only fields leak through
    for absent in ("messages", "stop", "metadata", "max_tokens", "max_completion_tokens",
                   "stream_options", "response_format"):
        assert absent not in body


def test_assistant_turn_with_only_tool_calls_has_no_message_item() -> None:
    request = GatewayRequest(model="m", messages=(
        user("x"), Message("assistant", tool_calls=(ToolCall("c", "f", "{}"),)),
    ))
    items = encode_request(DEP, request, stream=False)["input"]
    assert [i["type"] for i in items] == ["message", "function_call"]


@pytest.mark.parametrize(("choice", "wire"), [
    (ToolChoice("auto"), "auto"), (ToolChoice("none"), "none"), (ToolChoice("required"), "required"),
    (ToolChoice("tool", "f"), {"type": "function", "name": "f"}),
])
def test_tool_choice_modes(choice: ToolChoice, wire: object) -> None:
    request = GatewayRequest(model="m", messages=(user("x"),), tool_choice=choice)
    assert encode_request(DEP, request, stream=False)["tool_choice"] == wire


@pytest.mark.parametrize(("response_format", "text_format"), [
    ({"type": "json_object"}, {"type": "json_object"}),
    ({"type": "text"}, {"type": "text"}),
    ({"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}, "strict": True}},
     {"type": "json_schema", "name": "a", "schema": {"type": "object"}, "strict": True}),
])
def test_response_format_moves_to_text_format(response_format: Any, text_format: Any) -> None:
    request = GatewayRequest(model="m", messages=(user("x"),), response_format=response_format)
    body = encode_request(DEP, request, stream=False)
    assert body["text"] == {"format": text_format} and "response_format" not in body


def test_parallel_tool_calls_only_with_tools() -> None:
    request = GatewayRequest(model="m", messages=(user("x"),), parallel_tool_calls=True)
    assert "parallel_tool_calls" not in encode_request(DEP, request, stream=False)


# ---- response ------------------------------------------------------------------------------

# A recorded-shape Responses object: a reasoning item, text in two parts, two calls.
RECORDED_JSON: dict[str, Any] = {
    "id": "resp_67ccd2bed1ec8190", "object": "response", "created_at": 1741476542,
    "status": "completed", "completed_at": 1741476543, "error": None,
    "incomplete_details": None, "instructions": None, "max_output_tokens": None,
    "model": "gpt-4.1-2025-04-14",
    "output": [
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
         "content": [
             {"type": "output_text", "text": "Checking ", "annotations": [], "logprobs": []},
             {"type": "output_text", "text": "both.", "annotations": [], "logprobs": []},
         ]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "weather",
         "arguments": "{\"city\": \"Paris\"}", "status": "completed"},
        {"type": "function_call", "id": "fc_2", "call_id": "call_b", "name": "time",
         "arguments": "{}", "status": "completed"},
    ],
    "parallel_tool_calls": True, "store": False, "temperature": 1.0, "tool_choice": "auto",
    "tools": [], "top_p": 1.0,
    "usage": {"input_tokens": 328, "input_tokens_details": {"cached_tokens": 128},
              "output_tokens": 52, "output_tokens_details": {"reasoning_tokens": 16},
              "total_tokens": 380},
}


def test_decode_response_text_tool_calls_and_usage() -> None:
    completion = decode_response(RECORDED_JSON)
    assert completion.text == "Checking both."
    assert completion.finish_reason == "tool_calls"
    assert completion.tool_calls == (
        ToolCall("call_a", "weather", '{"city": "Paris"}'), ToolCall("call_b", "time", "{}"),
    )
    assert completion.usage == Usage(input_tokens=200, output_tokens=52, cached_input_tokens=128,
                                     reasoning_tokens=16)
    assert (completion.upstream_id, completion.upstream_model) == (
        "resp_67ccd2bed1ec8190", "gpt-4.1-2025-04-14")


@pytest.mark.parametrize(("details", "finish"), [
    ({"reason": "max_output_tokens"}, "length"),
    ({"reason": "content_filter"}, "content_filter"),
    (None, "length"),
])
def test_incomplete_response_finish(details: object, finish: str) -> None:
    data = {"id": "resp_2", "status": "incomplete", "incomplete_details": details,
            "output": [{"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": "Echo: one"}]}],
            "usage": {"input_tokens": 9, "output_tokens": 2,
                      "input_tokens_details": {"cached_tokens": 0}}}
    completion = decode_response(data)
    assert (completion.text, completion.finish_reason) == ("Echo: one", finish)
    assert completion.usage == Usage(input_tokens=9, output_tokens=2)


def test_refusal_is_text_and_plain_completion_is_stop() -> None:
    data = {"status": "completed", "output": [{"type": "message", "content": [
        {"type": "refusal", "refusal": "I can't help with that."}]}]}
    completion = decode_response(data)
    assert (completion.text, completion.finish_reason, completion.usage) == (
        "I can't help with that.", "stop", Usage())


def test_cache_write_tokens_are_not_input_tokens() -> None:
    data = {"status": "completed", "output": [], "usage": {
        "input_tokens": 100, "output_tokens": 1,
        "input_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 50}}}
    assert decode_response(data).usage == Usage(
        input_tokens=20, output_tokens=1, cached_input_tokens=30, cache_write_tokens=50)


@pytest.mark.parametrize(("error", "kind"), [
    ({"code": "server_error", "message": "boom"}, FailureKind.SERVER_ERROR),
    ({"code": "rate_limit_exceeded", "message": "slow down"}, FailureKind.RATE_LIMITED),
    ({"code": "invalid_prompt", "message": "no"}, FailureKind.BAD_REQUEST),
    ({"code": "context_length_exceeded", "message": "too long"}, FailureKind.CONTEXT_LENGTH),
    ({"code": "image_content_policy_violation", "message": "x"}, FailureKind.CONTENT_FILTER),
    ({"code": "vector_store_timeout", "message": "x"}, FailureKind.TIMEOUT),
    ({"code": "something_new", "message": "x"}, FailureKind.SERVER_ERROR),
    (None, FailureKind.SERVER_ERROR),
])
def test_failed_response_raises_by_code(error: object, kind: FailureKind) -> None:
    data = {"id": "resp_3", "status": "failed", "error": error, "output": []}
    with pytest.raises(ProviderError) as info:
        decode_response(data, provider="openai")
    assert info.value.kind is kind


def test_failed_response_message_is_redacted() -> None:
    secret = "sk-SECRETSECRET1234567890"
    data = {"status": "failed", "output": [],
            "error": {"code": "server_error", "message": f"bad key {secret}"}}
    with pytest.raises(ProviderError) as info:
        decode_response(data, secrets=(secret,))
    assert secret not in info.value.message and "[redacted]" in info.value.message


def test_not_a_response_object_is_value_error() -> None:
    with pytest.raises(ValueError):
        decode_response({"choices": []})


# ---- stream --------------------------------------------------------------------------------


def event(name: str, n: int, **fields: Any) -> str:
    return f"event: {name}\ndata: {json.dumps({'type': name, **fields, 'sequence_number': n})}\n\n"


START = {**RECORDED_JSON, "status": "in_progress", "output": [], "usage": None}
MSG = {"item_id": "msg_1", "output_index": 1, "content_index": 0}

# A recorded-shape stream: reasoning item, text deltas, two function calls, completed.
RECORDED = "".join([
    event("response.created", 0, response=START),
    event("response.in_progress", 1, response=START),
    event("response.output_item.added", 2, output_index=0,
          item={"type": "reasoning", "id": "rs_1", "summary": []}),
    event("response.output_item.done", 3, output_index=0,
          item={"type": "reasoning", "id": "rs_1", "summary": []}),
    event("response.output_item.added", 4, output_index=1,
          item={"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant",
                "content": []}),
    event("response.content_part.added", 5, **MSG,
          part={"type": "output_text", "text": "", "annotations": []}),
    event("response.output_text.delta", 6, **MSG, delta="Checking ", logprobs=[]),
    event("response.output_text.delta", 7, **MSG, delta="both.", logprobs=[]),
    event("response.output_text.done", 8, **MSG, text="Checking both.", logprobs=[]),
    event("response.content_part.done", 9, **MSG,
          part={"type": "output_text", "text": "Checking both.", "annotations": []}),
    event("response.output_item.done", 10, output_index=1, item=RECORDED_JSON["output"][1]),
    event("response.output_item.added", 11, output_index=2,
          item={"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "weather",
                "arguments": "", "status": "in_progress"}),
    event("response.function_call_arguments.delta", 12, item_id="fc_1", output_index=2,
          delta="{\"city\":"),
    event("response.function_call_arguments.delta", 13, item_id="fc_1", output_index=2,
          delta=" \"Paris\"}"),
    event("response.function_call_arguments.done", 14, item_id="fc_1", output_index=2,
          arguments="{\"city\": \"Paris\"}"),
    event("response.output_item.done", 15, output_index=2, item=RECORDED_JSON["output"][2]),
    event("response.output_item.added", 16, output_index=3,
          item={"type": "function_call", "id": "fc_2", "call_id": "call_b", "name": "time",
                "arguments": "", "status": "in_progress"}),
    # no argument deltas for this one: the arguments arrive only with the done item
    event("response.output_item.done", 17, output_index=3, item=RECORDED_JSON["output"][3]),
    event("response.completed", 18, response=RECORDED_JSON),
]).encode()

EXPECTED: list[StreamEvent] = [
    TextDelta("Checking "),
    TextDelta("both."),
    ToolCallDelta(0, "call_a", "weather", ""),
    ToolCallDelta(0, None, None, '{"city":'),
    ToolCallDelta(0, None, None, ' "Paris"}'),
    ToolCallDelta(1, "call_b", "time", ""),
    ToolCallDelta(1, None, None, "{}"),
    UsageReport(Usage(input_tokens=200, output_tokens=52, cached_input_tokens=128,
                      reasoning_tokens=16)),
    StreamEnd("tool_calls"),
]


def decode(pieces: list[bytes]) -> list[StreamEvent]:
    decoder = SSEStreamDecoder(EventDecoder("openai"))
    out: list[StreamEvent] = []
    for piece in pieces:
        out.extend(decoder.feed(piece))
    return out + decoder.close()


def test_recorded_stream_whole_and_byte_by_byte() -> None:
    assert decode([RECORDED]) == EXPECTED
    assert decode([RECORDED[i:i + 1] for i in range(len(RECORDED))]) == EXPECTED
    assert decode([RECORDED.replace(b"\n", b"\r\n")]) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(RECORDED)), max_size=40))
def test_recorded_stream_any_split(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(RECORDED)]
    assert decode([RECORDED[a:b] for a, b in zip(points, points[1:], strict=False)]) == EXPECTED


def test_data_only_events_use_the_payload_type() -> None:
    """Without `event:` lines the payload's `type` names the event."""
    data_only = b"".join(
        line + b"\n" for line in RECORDED.split(b"\n") if not line.startswith(b"event:")
    )
    assert decode([data_only]) == EXPECTED


def test_incomplete_stream_ends_with_length() -> None:
    final = {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
             "output": [], "usage": {"input_tokens": 10, "output_tokens": 2}}
    body = (event("response.output_text.delta", 0, **MSG, delta="Echo: one")
            + event("response.incomplete", 1, response=final)).encode()
    assert decode([body]) == [TextDelta("Echo: one"),
                              UsageReport(Usage(input_tokens=10, output_tokens=2)),
                              StreamEnd("length")]


def test_text_only_stream_ends_with_stop_and_ignores_later_events() -> None:
    final = {"status": "completed", "output": [], "usage": {"input_tokens": 3, "output_tokens": 1}}
    body = (event("response.output_text.delta", 0, **MSG, delta="hi")
            + event("response.completed", 1, response=final)
            + event("response.output_text.delta", 2, **MSG, delta="late")).encode()
    assert decode([body]) == [TextDelta("hi"), UsageReport(Usage(input_tokens=3, output_tokens=1)),
                              StreamEnd("stop")]


def test_unknown_events_and_keepalives_are_ignored() -> None:
    final = {"status": "completed", "output": []}
    body = (": keepalive\n\n"
            + event("response.reasoning_summary_text.delta", 0, delta="thinking")
            + event("response.brand_new_thing", 1, foo=[1, 2])
            + event("response.refusal.delta", 2, **MSG, delta="No.")
            + event("response.completed", 3, response=final)).encode()
    assert decode([body]) == [TextDelta("No."), UsageReport(Usage()), StreamEnd("stop")]


def test_cut_before_completed_is_stream_cut() -> None:
    cut = RECORDED[: RECORDED.index(b"event: response.completed")]
    with pytest.raises(ProviderError) as info:
        decode([cut])
    assert info.value.kind is FailureKind.STREAM_CUT


@pytest.mark.parametrize(("payload", "kind"), [
    ('event: error\ndata: {"type": "error", "code": "server_error", "message": "boom", '
     '"param": null, "sequence_number": 3}\n\n', FailureKind.SERVER_ERROR),
    ('event: error\ndata: {"type": "error", "code": "rate_limit_exceeded", "message": "slow", '
     '"param": null, "sequence_number": 3}\n\n', FailureKind.RATE_LIMITED),
    ('event: error\ndata: {"type": "error", "error": {"type": "invalid_request_error", '
     '"code": "context_length_exceeded", "message": "too long"}, "sequence_number": 3}\n\n',
     FailureKind.CONTEXT_LENGTH),
    ('data: {"type": "error", "code": "invalid_prompt", "message": "flagged", "param": null, '
     '"sequence_number": 3}\n\n', FailureKind.BAD_REQUEST),
    (event("response.failed", 3, response={"status": "failed", "output": [],
                                           "error": {"code": "server_error", "message": "x"}}),
     FailureKind.SERVER_ERROR),
    (event("response.failed", 3, response={"status": "failed", "output": [],
                                           "error": {"code": "rate_limit_exceeded", "message": "x"}}),
     FailureKind.RATE_LIMITED),
    ("event: response.output_text.delta\ndata: {not json\n\n", FailureKind.STREAM_CUT),
    ("event: response.output_text.delta\ndata: [1, 2]\n\n", FailureKind.STREAM_CUT),
    (event("response.completed", 3, response="nope"), FailureKind.STREAM_CUT),
    (event("response.output_item.added", 3, output_index=0), FailureKind.STREAM_CUT),
])
def test_mid_stream_errors(payload: str, kind: FailureKind) -> None:
    decoder = SSEStreamDecoder(EventDecoder("openai"))
    assert decoder.feed(event("response.output_text.delta", 0, **MSG, delta="hi").encode()) == [
        TextDelta("hi")]
    with pytest.raises(ProviderError) as info:
        decoder.feed(payload.encode())
    assert info.value.kind is kind


def test_error_event_message_is_redacted() -> None:
    secret = "sk-SECRETSECRET1234567890"
    decoder = SSEStreamDecoder(EventDecoder("openai", secrets=(secret,)))
    with pytest.raises(ProviderError) as info:
        decoder.feed(event("error", 0, code="server_error", message=f"key {secret}").encode())
    assert secret not in info.value.message
