"""server/wire/openai_chat: accepted Chat Completions requests, rejections with their
param paths, and the completion / chunks against the openai SDK's models."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from core.errors import InvalidRequest, UpstreamError
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
from server.wire.openai_chat import (
    ChatStreamEncoder,
    chat_completion,
    error_chunk,
    parse_chat_request,
)

TOOL = {"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hi"}], **extra}


def parse(given: dict[str, Any]) -> Any:
    return parse_chat_request(given)[0]


# -- accepted ----------------------------------------------------------------------------


def test_minimal_request() -> None:
    request, include_usage = parse_chat_request(body())
    assert request.messages == (Message("user", (TextPart("Hi"),)),)
    assert include_usage is False and request.stream is False


def test_full_conversation() -> None:
    request = parse(
        body(messages=[
            {"role": "developer", "content": "Rules"},
            {"role": "system", "content": [{"type": "text", "text": "Sys"}]},
            {"role": "user", "name": "bob", "content": [
                {"type": "text", "text": "Look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA",
                                                   "detail": "high"}},
            ]},
            {"role": "assistant", "content": None, "refusal": None, "annotations": [],
             "tool_calls": [{"id": "c1", "type": "function",
                             "function": {"name": "get", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
        ])  # fmt: skip
    )
    dev, sys, user, call, tool, refusal = request.messages
    assert dev == Message("system", (TextPart("Rules"),))
    assert sys.role == "system" and user.name == "bob"
    assert user.content[1] == ImagePart("data:image/png;base64,AAAA", "high")
    assert call == Message("assistant", (), (ToolCall("c1", "get", "{}"),))
    assert tool == Message("tool", (TextPart("42"),), tool_call_id="c1")
    assert refusal.text() == "no"


def test_options() -> None:
    request, include_usage = parse_chat_request(
        body(
            max_completion_tokens=50, max_tokens=50, temperature=Decimal("1.5"), top_p=0,
            stop="END", n=1, stream=True, stream_options={"include_usage": True},
            tools=[TOOL], tool_choice={"type": "function", "function": {"name": "get"}},
            parallel_tool_calls=True, response_format={"type": "json_object"}, user="u",
            metadata={"a": "b"}, seed=3, logprobs=False, store=False,
            constraints={"routing": {"strategy": "latency"}, "budget": {"max_cost_usd": "0.5"}},
        )  # fmt: skip
    )
    assert include_usage is True and request.stream is True
    assert request.max_output_tokens == 50 and request.temperature == 1.5
    assert request.stop == ("END",) and request.top_p == 0.0
    assert request.tool_choice == ToolChoice("tool", "get")
    assert request.tools[0].name == "get" and request.parallel_tool_calls is True
    assert request.response_format == {"type": "json_object"}
    assert request.routing.strategy == "latency" and request.max_cost_usd == Decimal("0.5")
    assert request.user == "u" and request.metadata == {"a": "b"}


def test_max_tokens_alone_and_stop_list_and_json_schema() -> None:
    request = parse(
        body(max_tokens=7, stop=["a", "b"], response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}})
    )  # fmt: skip
    assert request.max_output_tokens == 7 and request.stop == ("a", "b")
    assert request.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object"}},
    }


def test_null_optionals_mean_absent() -> None:
    request = parse(body(temperature=None, tools=None, stop=None, stream_options=None))
    assert request.temperature is None and request.tools == () and request.stop == ()


# -- rejections --------------------------------------------------------------------------

REJECTIONS = [
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "m"}, "messages"),
    (body(model=1), "model"),
    (body(messages=[]), "messages"),
    (body(messages={}), "messages"),
    (body(messages=["hi"]), "messages[0]"),
    (body(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
    (body(messages=[{"content": "x"}]), "messages[0].role"),
    (body(messages=[{"role": "user"}]), "messages[0].content"),
    (body(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    (body(messages=[{"role": "user", "content": []}]), "messages[0].content"),
    (body(messages=[{"role": "user", "content": [{"type": "text"}]}]), "messages[0].content[0].text"),
    (body(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": [
        {"type": "text", "text": "ok"}, {"type": "text", "text": None}]}]),
     "messages[1].content[1].text"),
    (body(messages=[{"role": "user", "content": [{"type": "input_audio"}]}]),
     "messages[0].content[0].type"),
    (body(messages=[{"role": "system", "content": [{"type": "image_url"}]}]),
     "messages[0].content[0].type"),
    (body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
     "messages[0].content[0].image_url.url"),
    (body(messages=[{"role": "user", "content": [{"type": "image_url",
                                                 "image_url": {"url": "u", "detail": "x"}}]}]),
     "messages[0].content[0].image_url.detail"),
    (body(messages=[{"role": "assistant", "content": None}]), "messages[0].content"),
    (body(messages=[{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]}]),
     "messages[0].tool_calls[0].function.arguments"),
    (body(messages=[{"role": "assistant", "tool_calls": [{"function": {}}]}]),
     "messages[0].tool_calls[0].id"),
    (body(messages=[{"role": "tool", "content": "x"}]), "messages[0].tool_call_id"),
    (body(messages=[{"role": "tool", "content": "x", "tool_call_id": 3}]),
     "messages[0].tool_call_id"),
    (body(max_token=5), "max_token"),
    (body(max_tokens=0), "max_tokens"),
    (body(max_completion_tokens="10"), "max_completion_tokens"),
    (body(max_tokens=5, max_completion_tokens=6), "max_tokens"),
    (body(n=2), "n"),
    (body(n=0), "n"),
    (body(temperature=3), "temperature"),
    (body(top_p=Decimal("1.01")), "top_p"),
    (body(stop=["a", "b", "c", "d", "e"]), "stop"),
    (body(stop=[]), "stop"),
    (body(stop=[1]), "stop[0]"),
    (body(stop=""), "stop"),
    (body(stream_options={"include_usage": True}), "stream_options"),
    (body(stream=True, stream_options={"include_usage": "yes"}), "stream_options.include_usage"),
    (body(stream=True, stream_options={"usage": True}), "stream_options.usage"),
    (body(tools=[{"type": "function"}]), "tools[0].function"),
    (body(tools=[{"type": "custom", "custom": {}}]), "tools[0].type"),
    (body(tools=[{"type": "function", "function": {"name": "has space"}}]), "tools[0].function.name"),
    (body(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]),
     "tools[0].function.parameters"),
    (body(tools=[TOOL, TOOL]), "tools[1].function.name"),
    (body(tool_choice="maybe"), "tool_choice"),
    (body(tool_choice="required"), "tool_choice"),
    (body(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "other"}}),
     "tool_choice.function.name"),
    (body(response_format={"type": "xml"}), "response_format.type"),
    (body(response_format={"type": "json_schema"}), "response_format.json_schema"),
    (body(response_format={"type": "json_schema", "json_schema": {}}),
     "response_format.json_schema.name"),
    (body(functions=[{"name": "f"}]), "functions"),
    (body(metadata={"k": "v" * 513}), "metadata.k"),
    (body(user=1), "user"),
    (body(constraints={"routing": {"strategy": "cheapest"}}), "constraints.routing.strategy"),
    (body(constraints={"budget": {"max_cost_usd": Decimal("0")}}), "constraints.budget.max_cost_usd"),
]  # fmt: skip


@pytest.mark.parametrize(("given", "param"), REJECTIONS)
def test_rejections_name_the_field(given: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(given)
    assert caught.value.param == param, caught.value.message


def json_values() -> st.SearchStrategy[Any]:
    keys = st.sampled_from(
        ["model", "messages", "role", "content", "type", "text", "image_url", "url", "tool_calls",
         "function", "name", "arguments", "id", "tool_call_id", "tools", "stop", "x"]
    )  # fmt: skip
    scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=4)
    scalars = scalars | st.sampled_from(["user", "assistant", "tool", "system", "text", "function"])
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=12,
    )


@settings(max_examples=300, deadline=None)
@given(json_values())
def test_arbitrary_json_only_raises_invalid_request(value: Any) -> None:
    for candidate in (value, body(messages=value), body(messages=[value]), body(tools=value),
                      body(tool_choice=value), body(response_format=value), body(stop=value)):  # fmt: skip
        try:
            parse_chat_request(candidate)
        except InvalidRequest:
            pass


# -- the completion ----------------------------------------------------------------------

USAGE = Usage(input_tokens=10, output_tokens=4, cached_input_tokens=6, reasoning_tokens=1)


def test_chat_completion_parses_in_the_sdk() -> None:
    obj = chat_completion(
        completion_id="chatcmpl-1", created=1700000000, model="gpt-4.1",
        completion=Completion("Hello", "stop", USAGE), gateway={"cost_usd": "0.01"},
    )  # fmt: skip
    json.dumps(obj)
    parsed = ChatCompletion.model_validate(obj)
    assert parsed.choices[0].message.content == "Hello"
    assert parsed.choices[0].finish_reason == "stop"
    assert parsed.usage is not None and parsed.usage.prompt_tokens == 16
    assert parsed.usage.total_tokens == 20
    assert parsed.usage.prompt_tokens_details is not None
    assert parsed.usage.prompt_tokens_details.cached_tokens == 6
    assert parsed.usage.completion_tokens_details is not None
    assert parsed.usage.completion_tokens_details.reasoning_tokens == 1
    assert obj["gateway"] == {"cost_usd": "0.01"}


def test_tool_call_completion() -> None:
    obj = chat_completion(
        completion_id="chatcmpl-2", created=1, model="m",
        completion=Completion("", "tool_calls", USAGE, (ToolCall("c1", "get", '{"a":1}'),)),
    )  # fmt: skip
    parsed = ChatCompletion.model_validate(obj)
    message = parsed.choices[0].message
    assert message.content is None and message.tool_calls is not None
    assert message.tool_calls[0].function.arguments == '{"a":1}'  # type: ignore[union-attr]
    assert "gateway" not in obj


# -- the stream --------------------------------------------------------------------------


def run_stream(events: list[Any], include_usage: bool) -> list[dict[str, Any]]:
    encoder = ChatStreamEncoder(
        completion_id="chatcmpl-s", created=5, model="gpt-4.1", include_usage=include_usage
    )
    chunks = encoder.start()
    for event in events:
        chunks += encoder.on_event(event)
    chunks += encoder.finish(usage=None, gateway={"cost_usd": "0.3"})
    assert encoder.finish() == []
    for chunk in chunks:
        json.dumps(chunk)
        assert ChatCompletionChunk.model_validate(chunk).id == "chatcmpl-s"
    return chunks


def test_text_stream_with_usage() -> None:
    chunks = run_stream(
        [TextDelta("Hel"), TextDelta("lo"), UsageReport(USAGE), StreamEnd("length")], True
    )
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])
    assert text == "Hello"
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 20
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["gateway"] == {"cost_usd": "0.3"}


def test_tool_stream_without_usage() -> None:
    chunks = run_stream(
        [ToolCallDelta(0, "c1", "get", '{"a":'), ToolCallDelta(0, arguments="1}"),
         ToolCallDelta(1, "c2", "get", "{}"), StreamEnd("tool_calls")], False
    )  # fmt: skip
    deltas = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[1:-1]]
    assert deltas[0] == {"index": 0, "id": "c1", "type": "function",
                         "function": {"name": "get", "arguments": '{"a":'}}  # fmt: skip
    assert deltas[1] == {"index": 0, "function": {"arguments": "1}"}}
    assert deltas[2]["index"] == 1 and deltas[2]["id"] == "c2"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert "usage" not in chunks[-1]


def test_error_chunk_is_what_the_sdk_raises_on() -> None:
    chunk = error_chunk(UpstreamError("provider died"), "req-3")
    assert chunk == {"error": {"message": "provider died", "type": "upstream_error",
                               "param": None, "code": "upstream_error",
                               "request_id": "req-3"}}  # fmt: skip


def test_the_openai_sdk_consumes_the_stream_and_raises_on_an_error_chunk() -> None:
    import httpx
    import openai

    chunks = run_stream([TextDelta("Hi"), ToolCallDelta(0, "c1", "get", "{}")], True)
    good = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"
    bad = f"data: {json.dumps(chunks[1])}\n\ndata: {json.dumps(error_chunk(UpstreamError('x')))}\n\n"
    bodies = [good, bad.encode()]

    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, content=bodies.pop(0), headers=headers)

    client = openai.OpenAI(
        api_key="k", base_url="http://gw/v1", max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(answer)),
    )  # fmt: skip
    messages: Any = [{"role": "user", "content": "x"}]
    with client.chat.completions.stream(model="m", messages=messages) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "Hi"
    assert final.choices[0].message.tool_calls is not None
    with pytest.raises(openai.APIError, match="x"):
        list(client.chat.completions.create(model="m", messages=messages, stream=True))
