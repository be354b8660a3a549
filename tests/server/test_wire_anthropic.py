"""server/wire/anthropic_messages: accepted Messages requests, rejections with their
param paths, and the Message / stream events / errors against the anthropic SDK."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from anthropic.types import ErrorResponse, RawMessageStreamEvent
from anthropic.types import Message as AnthropicMessage
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from core import errors
from core.errors import InvalidRequest
from core.model import (
    Completion,
    ImagePart,
    Message,
    StreamEnd,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
    UsageReport,
)
from server.wire.anthropic_messages import (
    AnthropicStreamEncoder,
    anthropic_error_body,
    message_object,
    parse_messages_request,
)

STREAM_EVENT = TypeAdapter(RawMessageStreamEvent)
TOOL = {"name": "get", "description": "d", "input_schema": {"type": "object"}}


def body(**extra: Any) -> dict[str, Any]:
    base = {"model": "claude-sonnet-4", "max_tokens": 100,
            "messages": [{"role": "user", "content": "Hi"}]}  # fmt: skip
    return {**base, **extra}


# -- accepted ----------------------------------------------------------------------------


def test_minimal_request() -> None:
    request = parse_messages_request(body())
    assert request.model == "claude-sonnet-4" and request.max_output_tokens == 100
    assert request.messages == (Message("user", (TextPart("Hi"),)),)


def test_blocks_system_tools_and_results() -> None:
    request = parse_messages_request(
        body(
            system=[{"type": "text", "text": "Be kind", "cache_control": {"type": "ephemeral"}}],
            messages=[
                {"role": "user", "content": [
                    {"type": "text", "text": "See"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                 "data": "AAAA"}},
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.jpg"}},
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "Calling"},
                    {"type": "tool_use", "id": "tu1", "name": "get",
                     "input": {"q": "x", "n": Decimal("1.5")}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "tu1", "content": "ok"},
                    {"type": "tool_result", "tool_use_id": "tu2", "is_error": True,
                     "content": [{"type": "text", "text": "bad"}]},
                    {"type": "text", "text": "Thanks"},
                ]},
            ],
        )  # fmt: skip
    )
    system, user, assistant, result1, result2, thanks = request.messages
    assert system == Message("system", (TextPart("Be kind"),))
    assert user.content[1] == ImagePart("data:image/png;base64,AAAA")
    assert user.content[2] == ImagePart("https://x/y.jpg")
    assert assistant.text() == "Calling"
    assert assistant.tool_calls == (ToolCall("tu1", "get", '{"q":"x","n":1.5}'),)
    assert result1 == Message("tool", (TextPart("ok"),), tool_call_id="tu1")
    assert result2.text() == "[tool error] bad" and result2.tool_call_id == "tu2"
    assert thanks == Message("user", (TextPart("Thanks"),))


def test_options() -> None:
    request = parse_messages_request(
        body(
            system="Sys", stop_sequences=["\n\nHuman:"], temperature=Decimal("0.5"), top_p=1,
            top_k=40, tools=[TOOL], tool_choice={"type": "any", "disable_parallel_tool_use": True},
            metadata={"user_id": "u-1"}, stream=True,
            constraints={"routing": {"deny_providers": ["openai"]}},
        )  # fmt: skip
    )
    assert request.messages[0] == Message("system", (TextPart("Sys"),))
    assert request.stop == ("\n\nHuman:",) and request.temperature == 0.5
    assert request.tool_choice == ToolChoice("required")
    assert request.parallel_tool_calls is False
    assert request.tools[0].parameters == {"type": "object"}
    assert request.user == "u-1" and request.stream is True
    assert request.routing.deny_providers == frozenset({"openai"})


@pytest.mark.parametrize(
    ("choice", "expected"),
    [({"type": "auto"}, ToolChoice("auto")), ({"type": "none"}, ToolChoice("none")),
     ({"type": "tool", "name": "get"}, ToolChoice("tool", "get"))],
)  # fmt: skip
def test_tool_choices(choice: dict[str, Any], expected: ToolChoice) -> None:
    assert parse_messages_request(body(tools=[TOOL], tool_choice=choice)).tool_choice == expected


# -- rejections --------------------------------------------------------------------------

REJECTIONS = [
    ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"max_tokens": 5, "messages": []}, "model"),
    ({"model": "m", "max_tokens": 5}, "messages"),
    (body(max_tokens=0), "max_tokens"),
    (body(max_tokens="5"), "max_tokens"),
    (body(model=None), "model"),
    (body(messages=[]), "messages"),
    (body(messages=[{"role": "system", "content": "x"}]), "messages[0].role"),
    (body(messages=[{"role": "user"}]), "messages[0].content"),
    (body(messages=[{"role": "user", "content": []}]), "messages[0].content"),
    (body(messages=[{"role": "user", "content": [{"type": "video"}]}]), "messages[0].content[0].type"),
    (body(messages=[{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "b",
                                                 "input": {}}]}]), "messages[0].content[0].type"),
    (body(messages=[{"role": "assistant", "content": [{"type": "tool_result"}]}]),
     "messages[0].content[0].type"),
    (body(messages=[{"role": "user", "content": [{"type": "text", "text": 1}]}]),
     "messages[0].content[0].text"),
    (body(messages=[{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/tiff", "data": "AA"}}]}]),
     "messages[0].content[0].source.media_type"),
    (body(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]),
     "messages[0].content[0].source.type"),
    (body(messages=[{"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "b",
                                                      "input": "{}"}]}]),
     "messages[0].content[0].input"),
    (body(messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                 "content": [{"type": "audio"}]}]}]),
     "messages[0].content[0].content[0].type"),
    (body(messages=[{"role": "user", "content": [{"type": "tool_result"}]}]),
     "messages[0].content[0].tool_use_id"),
    (body(messages=[{"role": "assistant", "content": [{"type": "thinking", "thinking": "x"}]}]),
     "messages"),
    (body(system=5), "system"),
    (body(system=[{"type": "image"}]), "system[0].type"),
    (body(temperature=Decimal("1.5")), "temperature"),
    (body(top_p="1"), "top_p"),
    (body(stop_sequences="x"), "stop_sequences"),
    (body(max_token=5), "max_token"),
    (body(tools=[{"name": "get"}]), "tools[0].input_schema"),
    (body(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools[0].type"),
    (body(tools=[TOOL, TOOL]), "tools[1].name"),
    (body(tool_choice={"type": "any"}), "tool_choice"),
    (body(tool_choice={"type": "sometimes"}), "tool_choice.type"),
    (body(tools=[TOOL], tool_choice={"type": "tool"}), "tool_choice.name"),
    (body(tools=[TOOL], tool_choice={"type": "tool", "name": "nope"}), "tool_choice.name"),
    (body(tools=[TOOL], tool_choice={"type": "auto", "disable_parallel_tool_use": 1}),
     "tool_choice.disable_parallel_tool_use"),
    (body(metadata={"user_id": 5}), "metadata.user_id"),
    (body(metadata={"session": "x"}), "metadata.session"),
    (body(stream=1), "stream"),
    (body(constraints={"budget": {"max_cost_usd": "-0.1"}}), "constraints.budget.max_cost_usd"),
]  # fmt: skip


@pytest.mark.parametrize(("given", "param"), REJECTIONS)
def test_rejections_name_the_field(given: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_messages_request(given)
    assert caught.value.param == param, caught.value.message


def json_values() -> st.SearchStrategy[Any]:
    keys = st.sampled_from(
        ["model", "max_tokens", "messages", "role", "content", "type", "text", "source", "data",
         "media_type", "id", "name", "input", "tool_use_id", "is_error", "tools", "system", "x"]
    )  # fmt: skip
    scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=4)
    scalars = scalars | st.sampled_from(["user", "assistant", "text", "image", "tool_use",
                                         "tool_result", "base64", "image/png"])  # fmt: skip
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=12,
    )


@settings(max_examples=300, deadline=None)
@given(json_values())
def test_arbitrary_json_only_raises_invalid_request(value: Any) -> None:
    for candidate in (value, body(messages=value), body(messages=[value]), body(system=value),
                      body(tools=value), body(tool_choice=value), body(metadata=value)):  # fmt: skip
        try:
            parse_messages_request(candidate)
        except InvalidRequest:
            pass


# -- the Message -------------------------------------------------------------------------

USAGE = Usage(input_tokens=10, output_tokens=5, cached_input_tokens=20, cache_write_tokens=3)


@pytest.mark.parametrize(
    ("finish", "stop"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
     ("content_filter", "refusal")],
)  # fmt: skip
def test_message_object_parses_in_the_sdk(finish: Any, stop: str) -> None:
    calls = (ToolCall("tu1", "get", '{"q": 1}'), ToolCall("tu2", "get", ""),
             ToolCall("tu3", "get", "not json"))  # fmt: skip
    obj = message_object(
        message_id="msg_1", model="claude-sonnet-4",
        completion=Completion("Hello", finish, USAGE, calls), gateway={"cost_usd": "1"},
    )  # fmt: skip
    json.dumps(obj)
    message = AnthropicMessage.model_validate(obj)
    assert message.stop_reason == stop
    assert message.content[0].type == "text" and message.content[0].text == "Hello"
    inputs = [block.input for block in message.content[1:]]  # type: ignore[union-attr]
    assert inputs == [{"q": 1}, {}, {"_raw_arguments": "not json"}]
    assert message.usage.input_tokens == 10 and message.usage.output_tokens == 5
    assert message.usage.cache_read_input_tokens == 20
    assert message.usage.cache_creation_input_tokens == 3
    assert obj["gateway"] == {"cost_usd": "1"}


# -- the stream --------------------------------------------------------------------------


def run_stream(events: list[Any], *, fail: Any = None) -> list[tuple[str, dict[str, Any]]]:
    encoder = AnthropicStreamEncoder(
        message_id="msg_s", model="claude-sonnet-4", input_tokens=7, request_id="req-s"
    )
    frames = encoder.start()
    for event in events:
        frames += encoder.on_event(event)
    frames += encoder.error(fail) if fail is not None else encoder.finish(gateway={"c": 1})
    assert encoder.finish() == []
    for name, data in frames:
        json.dumps(data)
        assert data["type"] == name
        if name == "error":
            ErrorResponse.model_validate(data)
        else:
            STREAM_EVENT.validate_python(data)
    return frames


def test_text_and_tool_stream() -> None:
    frames = run_stream([
        TextDelta("Let me "), TextDelta("check"),
        ToolCallDelta(0, "tu1", "get", '{"q":'), ToolCallDelta(0, arguments='"x"}'),
        ToolCallDelta(1, "tu2", "get", ""), UsageReport(USAGE), StreamEnd("tool_calls"),
    ])  # fmt: skip
    assert [name for name, _ in frames] == [
        "message_start",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert frames[0][1]["message"]["usage"]["input_tokens"] == 7
    assert frames[5][1] == {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "tu1", "name": "get", "input": {}}}  # fmt: skip
    assert frames[7][1]["delta"] == {"type": "input_json_delta", "partial_json": '"x"}'}
    delta = frames[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["output_tokens"] == 5 and delta["usage"]["cache_read_input_tokens"] == 20


def test_stream_text_after_tool_opens_a_new_block() -> None:
    frames = run_stream([ToolCallDelta(0, "tu1", "f", "{}"), TextDelta("done"), StreamEnd("stop")])
    starts = [d["content_block"]["type"] for n, d in frames if n == "content_block_start"]
    assert starts == ["tool_use", "text"]
    assert frames[-2][1]["delta"]["stop_reason"] == "end_turn"


def test_stream_failure_is_an_error_event() -> None:
    frames = run_stream([TextDelta("par")], fail=errors.UpstreamError("gone"))
    assert frames[-1] == ("error", {"type": "error", "error": {"type": "api_error",
                                                               "message": "gone"},
                                    "request_id": "req-s"})  # fmt: skip


@pytest.mark.parametrize(
    ("error", "kind"),
    [(errors.InvalidRequest("x"), "invalid_request_error"),
     (errors.AuthenticationFailed("x"), "authentication_error"),
     (errors.BudgetExceeded("x"), "billing_error"),
     (errors.PermissionDenied("x"), "permission_error"),
     (errors.UnknownModel("x"), "not_found_error"),
     (errors.PayloadTooLarge("x"), "request_too_large"),
     (errors.RateLimited("x"), "rate_limit_error"),
     (errors.Conflict("x"), "invalid_request_error"),
     (errors.GatewayError("x"), "api_error"),
     (errors.UpstreamError("x"), "api_error"),
     (errors.ServiceUnavailable("x"), "api_error"),
     (errors.UpstreamTimeout("x"), "timeout_error")],
)  # fmt: skip
def test_error_bodies(error: errors.GatewayError, kind: str) -> None:
    out = anthropic_error_body(error, "req-9")
    assert out == {"type": "error", "error": {"type": kind, "message": "x"}, "request_id": "req-9"}
    if kind != "request_too_large":  # the SDK's union has no model for it (it is a 413)
        assert ErrorResponse.model_validate(out).request_id == "req-9"


def test_the_anthropic_sdk_consumes_the_stream() -> None:
    import anthropic
    import httpx2 as httpx  # this anthropic SDK is built on httpx2, a fork of httpx

    frames = run_stream([TextDelta("Hi"), ToolCallDelta(0, "tu1", "get", '{"q": 2}'),
                         UsageReport(USAGE), StreamEnd("tool_calls")])  # fmt: skip
    raw = b"".join(f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in frames)

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=raw, headers={"content-type": "text/event-stream"})

    client = anthropic.Anthropic(
        api_key="k", base_url="http://gw",
        http_client=httpx.Client(transport=httpx.MockTransport(answer)),
    )  # fmt: skip
    messages: Any = [{"role": "user", "content": "x"}]
    with client.messages.stream(model="m", max_tokens=5, messages=messages) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "Hi"  # type: ignore[union-attr]
    assert final.content[1].input == {"q": 2}  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == 5
