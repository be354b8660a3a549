"""server/wire/responses: every accepted unified-API shape, every rejection (with its
param path), the response object and stream events against the openai SDK's models."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.responses import Response
from openai.types.responses.response_stream_event import ResponseStreamEvent
from pydantic import TypeAdapter

from core.errors import InvalidRequest, RateLimited
from core.model import (
    Completion,
    ImagePart,
    Message,
    RoutingConstraints,
    TextPart,
    ToolCall,
    ToolChoice,
    Usage,
)
from server.wire.responses import parse_responses_request, response_object

STREAM_EVENT = TypeAdapter(ResponseStreamEvent)


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4.1", "input": "Hello", **extra}


def json_values() -> st.SearchStrategy[Any]:
    keys = st.sampled_from(
        ["model", "input", "role", "content", "type", "text", "prompt", "messages", "name",
         "call_id", "arguments", "output", "tools", "format", "constraints", "routing",
         "budget", "max_cost_usd", "strategy", "image_url", "detail", "x"]
    )  # fmt: skip
    scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5)
    scalars = scalars | st.decimals(allow_nan=False, places=2, min_value=-3, max_value=3)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=12,
    )


# -- accepted shapes ---------------------------------------------------------------------


def test_string_input_is_one_user_message() -> None:
    request = parse_responses_request(body())
    assert request.model == "gpt-4.1"
    assert request.messages == (Message("user", (TextPart("Hello"),)),)
    assert request.routing == RoutingConstraints() and request.max_cost_usd is None


@pytest.mark.parametrize(
    "given",
    [
        {"prompt": "Hello"},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]},
        {"messages": [{"role": "user", "content": "Hello"}]},
        [{"role": "user", "content": "Hello"}],
        [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello"}]}],
    ],
)
def test_original_and_responses_input_shapes(given: Any) -> None:
    assert parse_responses_request(body(input=given)).messages == (
        Message("user", (TextPart("Hello"),)),
    )


def test_items_with_images_tools_and_instructions() -> None:
    request = parse_responses_request(
        body(
            instructions="Be brief",
            input=[
                {"role": "developer", "content": "Rules"},
                {"role": "user", "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
                ]},
                {"role": "assistant", "content": [{"type": "output_text", "text": "Let me look"}]},
                {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "lookup", "arguments": "{\"a\":1}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            ],
        )  # fmt: skip
    )
    system, rules, user, assistant, tool = request.messages
    assert system == Message("system", (TextPart("Be brief"),))
    assert rules == Message("system", (TextPart("Rules"),))
    assert user.content[1] == ImagePart("https://x/y.png", "low")
    assert assistant.text() == "Let me look"
    assert assistant.tool_calls == (
        ToolCall("c1", "lookup", "{}"),
        ToolCall("c2", "lookup", '{"a":1}'),
    )
    assert tool == Message("tool", (TextPart("sunny"),), tool_call_id="c1")


def test_function_call_without_assistant_text_opens_an_assistant_turn() -> None:
    request = parse_responses_request(
        body(input=[
            {"role": "user", "content": "hi"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": ""},
        ])  # fmt: skip
    )
    assert request.messages[1] == Message("assistant", (), (ToolCall("c1", "f", ""),))


def test_every_option_maps_to_the_request() -> None:
    request = parse_responses_request(
        body(
            max_output_tokens=100,
            temperature=Decimal("0.7"),
            top_p=1,
            metadata={"team": "a"},
            stream=True,
            user="u1",
            tools=[{"type": "function", "name": "get", "description": "d",
                    "parameters": {"type": "object", "properties": {"x": {"minimum": Decimal("0.5")}}}}],
            tool_choice={"type": "function", "name": "get"},
            parallel_tool_calls=False,
            text={"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"},
                             "strict": True}},
            constraints={"routing": {"strategy": "reliability", "allow_providers": ["anthropic"],
                                     "deny_providers": ["openai"]},
                         "budget": {"max_cost_usd": Decimal("0.01")}},
            store=True,
            background=False,
        )  # fmt: skip
    )
    assert request.max_output_tokens == 100
    assert request.temperature == 0.7 and isinstance(request.temperature, float)
    assert request.top_p == 1.0 and request.stream is True and request.user == "u1"
    assert request.metadata == {"team": "a"}
    assert request.tools[0].parameters == {
        "type": "object",
        "properties": {"x": {"minimum": 0.5}},
    }
    json.dumps(request.tools[0].parameters)  # no Decimal left in what goes to providers
    assert request.tool_choice == ToolChoice("tool", "get")
    assert request.parallel_tool_calls is False
    assert request.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
    }
    assert request.routing == RoutingConstraints(
        "reliability", frozenset({"anthropic"}), frozenset({"openai"})
    )
    assert request.max_cost_usd == Decimal("0.01")


@pytest.mark.parametrize(
    ("given", "expected"),
    [(Decimal("0.01"), Decimal("0.01")), (1, Decimal(1)), ("0.30", Decimal("0.30")),
     (0.1, Decimal("0.1"))],
)  # fmt: skip
def test_budget_is_exact(given: Any, expected: Decimal) -> None:
    request = parse_responses_request(body(constraints={"budget": {"max_cost_usd": given}}))
    assert request.max_cost_usd == expected


def test_text_formats() -> None:
    assert parse_responses_request(body(text={"format": {"type": "text"}})).response_format is None
    fmt = parse_responses_request(body(text={"format": {"type": "json_object"}}))
    assert fmt.response_format == {"type": "json_object"}


# -- rejections --------------------------------------------------------------------------

REJECTIONS = [
    ({"input": "x"}, "model"),
    ({"model": "m"}, "input"),
    (body(model=1), "model"),
    (body(model=""), "model"),
    (body(input=""), "input"),
    (body(input=[]), "input"),
    (body(input=5), "input"),
    (body(input={"prompt": "a", "messages": []}), "input"),
    (body(input={"prompt": 3}), "input.prompt"),
    (body(input={"messages": []}), "input.messages"),
    (body(input={"messages": [{"role": "robot", "content": "x"}]}), "input.messages[0].role"),
    (body(input={"messages": [{"content": "x"}]}), "input.messages[0].role"),
    (body(input={"messages": [{"role": "user"}]}), "input.messages[0].content"),
    (body(input={"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}),
     "input.messages[0].content[0].text"),
    (body(input=[{"role": "user", "content": [{"type": "audio"}]}]), "input[0].content[0].type"),
    (body(input=[{"role": "system", "content": [{"type": "input_image", "image_url": "u"}]}]),
     "input[0].content[0].type"),
    (body(input=[{"role": "user", "content": [{"type": "input_image", "image_url": "u",
                                              "detail": "max"}]}]), "input[0].content[0].detail"),
    (body(input=[{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]),
     "input[0].content[0].file_id"),
    (body(input=[{"type": "reasoning"}]), "input[0].type"),
    (body(input=[{"type": "function_call", "name": "f", "arguments": "{}"}]), "input[0].call_id"),
    (body(input=[{"type": "function_call", "call_id": "c", "name": "f g", "arguments": "{}"}]),
     "input[0].name"),
    (body(input=[{"type": "function_call_output", "call_id": "c", "output": 5}]), "input[0].output"),
    (body(max_output_tokens=0), "max_output_tokens"),
    (body(max_output_tokens="5"), "max_output_tokens"),
    (body(max_output_tokens=Decimal("2.5")), "max_output_tokens"),
    (body(temperature=Decimal("2.5")), "temperature"),
    (body(temperature=True), "temperature"),
    (body(top_p=-1), "top_p"),
    (body(stream="yes"), "stream"),
    (body(metadata={"a": 1}), "metadata.a"),
    (body(metadata={str(i): "v" for i in range(17)}), "metadata"),
    (body(metadata=[]), "metadata"),
    (body(instructions=["x"]), "instructions"),
    (body(max_token=5), "max_token"),
    (body(previous_response_id="resp_1"), "previous_response_id"),
    (body(conversation="conv_1"), "conversation"),
    (body(tools=[{"type": "web_search"}]), "tools[0].type"),
    (body(tools=[{"type": "function"}]), "tools[0].name"),
    (body(tools=[{"type": "function", "name": "f", "parameters": "x"}]), "tools[0].parameters"),
    (body(tools=[{"type": "function", "name": "f"}, {"type": "function", "name": "f"}]),
     "tools[1].name"),
    (body(tool_choice="always"), "tool_choice"),
    (body(tool_choice="required"), "tool_choice"),
    (body(tools=[{"type": "function", "name": "f"}], tool_choice={"type": "function", "name": "g"}),
     "tool_choice.name"),
    (body(text={"format": {"type": "yaml"}}), "text.format.type"),
    (body(text={"format": {"type": "json_schema"}}), "text.format.name"),
    (body(text={"format": {"type": "json_schema", "name": "n", "schema": 1}}), "text.format.schema"),
    (body(constraints=[]), "constraints"),
    (body(constraints={"routing": {"strategy": "fastest"}}), "constraints.routing.strategy"),
    (body(constraints={"routing": {"allow_providers": "openai"}}),
     "constraints.routing.allow_providers"),
    (body(constraints={"routing": {"allow_providers": []}}), "constraints.routing.allow_providers"),
    (body(constraints={"routing": {"deny_providers": [1]}}), "constraints.routing.deny_providers[0]"),
    (body(constraints={"routing": {"strategie": "cost"}}), "constraints.routing.strategie"),
    (body(constraints={"budget": {"max_cost_usd": 0}}), "constraints.budget.max_cost_usd"),
    (body(constraints={"budget": {"max_cost_usd": Decimal("-1")}}), "constraints.budget.max_cost_usd"),
    (body(constraints={"budget": {"max_cost_usd": "cheap"}}), "constraints.budget.max_cost_usd"),
    (body(constraints={"budget": {"max_cost_usd": "NaN"}}), "constraints.budget.max_cost_usd"),
    (body(constraints={"budget": {"max_cost_usd": True}}), "constraints.budget.max_cost_usd"),
    (body(constraints={"limits": {}}), "constraints.limits"),
]  # fmt: skip


@pytest.mark.parametrize(("given", "param"), REJECTIONS)
def test_rejections_name_the_field(given: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_responses_request(given)
    assert caught.value.param == param, caught.value.message
    assert caught.value.status == 400 and caught.value.message


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(InvalidRequest, match="JSON object"):
        parse_responses_request([1, 2])


def test_typo_gets_a_hint() -> None:
    with pytest.raises(InvalidRequest, match="did you mean 'max_output_tokens'"):
        parse_responses_request(body(max_output_token=5))


@settings(max_examples=300, deadline=None)
@given(json_values())
def test_arbitrary_json_only_raises_invalid_request(value: Any) -> None:
    for candidate in (value, body(input=value), body(tools=value), body(constraints=value),
                      body(text=value), body(input=[value]), body(tool_choice=value)):  # fmt: skip
        try:
            parse_responses_request(candidate)
        except InvalidRequest:
            pass


# -- the response object -----------------------------------------------------------------

USAGE = Usage(input_tokens=10, output_tokens=5, cached_input_tokens=3, reasoning_tokens=2)


def encode(completion: Completion | None, status: str = "completed", **extra: Any) -> Response:
    request = parse_responses_request(
        body(instructions="sys", tools=[{"type": "function", "name": "f"}], metadata={"k": "v"})
    )
    obj = response_object(
        response_id="resp_abc", created_at=1700000000, model="gpt-4.1", completion=completion,
        status=status, error=extra.get("error"), gateway={"provider": "mock", "cost_usd": "0.1"},
        request=request,
    )  # fmt: skip
    json.dumps(obj)
    assert obj["gateway"] == {"provider": "mock", "cost_usd": "0.1"}
    return Response.model_validate(obj)


def test_response_object_parses_in_the_sdk() -> None:
    response = encode(Completion("Hi there", "stop", USAGE))
    assert response.id == "resp_abc" and response.object == "response"
    assert response.status == "completed" and response.output_text == "Hi there"
    assert response.output[0].id == "msg_abc"
    assert response.usage is not None
    assert response.usage.input_tokens == 13 and response.usage.total_tokens == 18
    assert response.usage.input_tokens_details.cached_tokens == 3
    assert response.usage.output_tokens_details.reasoning_tokens == 2
    assert response.instructions == "sys" and response.metadata == {"k": "v"}
    assert response.tools[0].name == "f"  # type: ignore[union-attr]


def test_tool_calls_become_function_call_items() -> None:
    calls = (ToolCall("call_1", "f", '{"a":1}'), ToolCall("call_2", "f", "{}"))
    response = encode(Completion("", "tool_calls", USAGE, calls))
    assert [item.type for item in response.output] == ["function_call", "function_call"]
    assert response.output[1].call_id == "call_2"  # type: ignore[union-attr]
    assert response.output[0].arguments == '{"a":1}'  # type: ignore[union-attr]


def test_length_makes_the_response_incomplete() -> None:
    response = encode(Completion("Hi", "length", USAGE))
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


def test_failed_response_carries_the_error() -> None:
    response = encode(None, "failed", error=RateLimited("slow down"))
    assert response.status == "failed" and response.output == []
    assert response.error is not None and response.error.code == "rate_limit_exceeded"
    assert response.error.message == "slow down"
