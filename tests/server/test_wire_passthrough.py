"""Fields clients send that have no neutral meaning: parsed by each surface, passed through
to a provider of the same wire family and dropped for others; structured-output formats
mapped across families; the output limit clamped to the deployment's (issue 13)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from adapters.providers import anthropic_codec, openai_codec, openai_responses_codec
from adapters.providers.base import Timeouts
from adapters.providers.mock import MockProvider
from core.catalog import Deployment, Price
from core.errors import InvalidRequest
from core.model import GatewayRequest
from server.wire.anthropic_messages import parse_count_tokens_request, parse_messages_request
from server.wire.openai_chat import parse_chat_request
from server.wire.responses import parse_responses_request

DEP = Deployment(
    id="x/m", model="m", provider="x", upstream_model="m-1",
    price=Price(Decimal(1), Decimal(2)), context_window=8000, max_output_tokens=100,
)
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
USER = [{"role": "user", "content": "hi"}]


def anthropic_body(request: GatewayRequest) -> dict[str, Any]:
    return anthropic_codec.encode_request(DEP, request, stream=False)


def chat_body(request: GatewayRequest) -> dict[str, Any]:
    return openai_codec.encode_request(DEP, request, stream=False)


def responses_body(request: GatewayRequest) -> dict[str, Any]:
    return openai_responses_codec.encode_request(DEP, request, stream=False)


def test_anthropic_tool_and_caching_fields_reach_anthropic_only() -> None:
    tool = {
        "name": "get", "input_schema": SCHEMA, "eager_input_streaming": True,
        "defer_loading": False, "input_examples": [{"city": "Oslo"}],
        "allowed_callers": ["direct"], "cache_control": {"type": "ephemeral"}, "strict": True,
    }
    request = parse_messages_request({
        "model": "m", "max_tokens": 10, "messages": USER, "tools": [tool],
        "cache_control": {"type": "ephemeral"}, "top_k": 5,
    })
    body = anthropic_body(request)
    assert body["tools"] == [tool]
    assert body["cache_control"] == {"type": "ephemeral"} and body["top_k"] == 5
    for other in (chat_body(request), responses_body(request)):
        assert "cache_control" not in other and "top_k" not in other
        assert "eager_input_streaming" not in json.dumps(other["tools"])


def test_output_config_format_maps_to_every_family() -> None:
    request = parse_messages_request({
        "model": "m", "max_tokens": 10, "messages": USER,
        "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}, "effort": "low"},
    })
    assert request.response_format == {
        "type": "json_schema", "json_schema": {"name": "output", "schema": SCHEMA}
    }
    assert anthropic_body(request)["output_config"] == {
        "effort": "low", "format": {"type": "json_schema", "schema": SCHEMA}
    }
    assert chat_body(request)["response_format"] == request.response_format
    assert responses_body(request)["text"] == {
        "format": {"type": "json_schema", "name": "output", "schema": SCHEMA}
    }
    assert "output_config" not in chat_body(request)


def test_chat_json_schema_reaches_anthropic_as_output_config() -> None:
    request, _ = parse_chat_request({
        "model": "m", "messages": USER,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}},
    })
    assert anthropic_body(request)["output_config"] == {
        "format": {"type": "json_schema", "schema": SCHEMA}
    }


def test_chat_fields_pass_to_chat_providers_only() -> None:
    request, _ = parse_chat_request({
        "model": "m", "messages": USER, "top_logprobs": 2, "logprobs": True, "seed": 7,
        "prompt_cache_retention": "24h", "modalities": ["text"],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": SCHEMA,
                                                     "strict": True}}],
    })
    body = chat_body(request)
    assert (body["top_logprobs"], body["logprobs"], body["seed"]) == (2, True, 7)
    assert body["prompt_cache_retention"] == "24h" and "modalities" not in body
    assert body["tools"][0]["function"]["strict"] is True
    assert responses_body(request)["tools"][0]["strict"] is True
    assert "seed" not in responses_body(request) and "seed" not in anthropic_body(request)


def test_responses_fields_pass_to_responses_providers_only() -> None:
    request = parse_responses_request({
        "model": "m", "input": "hi", "top_logprobs": 3, "prompt_cache_retention": "in_memory",
        "max_tool_calls": 2, "text": {"verbosity": "low"}, "store": True,
        "tools": [{"type": "function", "name": "f", "parameters": SCHEMA, "strict": True}],
    })
    body = responses_body(request)
    assert (body["top_logprobs"], body["max_tool_calls"]) == (3, 2)
    assert body["prompt_cache_retention"] == "in_memory"
    assert body["text"] == {"verbosity": "low"} and body["store"] is False
    assert body["tools"][0]["strict"] is True
    assert "max_tool_calls" not in chat_body(request)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "input": "hi", "prompt": {"id": "p"}}, "prompt"),
        ({"model": "m", "input": "hi", "top_logprobs": 30}, "top_logprobs"),
        ({"model": "m", "input": "hi", "max_tool_calls": "2"}, "max_tool_calls"),
    ],
)
def test_responses_refusals_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_responses_request(body)
    assert err.value.param == param


def test_output_limit_is_clamped_to_the_deployment() -> None:
    request, _ = parse_chat_request({"model": "m", "messages": USER, "max_tokens": 128000})
    assert chat_body(request)["max_completion_tokens"] == 100
    assert responses_body(request)["max_output_tokens"] == 100
    assert anthropic_body(request)["max_tokens"] == 100


def test_count_tokens_body_needs_no_max_tokens() -> None:
    request = parse_count_tokens_request({"model": "m", "messages": USER})
    assert request.max_output_tokens is None
    with pytest.raises(InvalidRequest) as err:
        parse_messages_request({"model": "m", "messages": USER})
    assert err.value.param == "max_tokens"


async def test_mock_answers_json_for_structured_output() -> None:
    for fmt, expected in (
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}, {"city": ""}),
        ({"type": "json_object"}, {}),
    ):
        request, _ = parse_chat_request({"model": "m", "messages": USER, "response_format": fmt})
        completion = await MockProvider().complete(DEP, request, timeouts=Timeouts())
        assert json.loads(completion.text) == expected
        assert completion.finish_reason == "stop"
        streamed = [e async for e in MockProvider().stream(DEP, request, timeouts=Timeouts())]
        text = "".join(getattr(e, "text", "") for e in streamed)
        assert text == completion.text


async def test_mock_json_object_follows_a_schema_written_in_the_prompt() -> None:
    # instructor's JSON mode: json_object, and the schema in the system message's text
    system = f"Answer in json matching this json_schema:\n\n{json.dumps(SCHEMA, indent=2)}\n\nThanks {{"
    request, _ = parse_chat_request({
        "model": "m", "response_format": {"type": "json_object"},
        "messages": [{"role": "system", "content": system}, *USER],
    })
    completion = await MockProvider().complete(DEP, request, timeouts=Timeouts())
    assert json.loads(completion.text) == {"city": ""}


def test_every_top_level_field_of_the_openai_sdk_request_types_is_known() -> None:
    """The `openai` SDK's request TypedDicts list OpenAI's current fields: none is unknown."""
    from openai.types.chat import completion_create_params as chat_params
    from openai.types.responses import response_create_params as responses_params

    from server.wire import openai_chat, responses

    chat_known = {*openai_chat.SUPPORTED, *openai_chat.IGNORED, "stream"}
    assert set(chat_params.CompletionCreateParamsBase.__annotations__) <= chat_known
    responses_known = {*responses.SUPPORTED, *responses.IGNORED, "stream"}
    assert set(responses_params.ResponseCreateParamsBase.__annotations__) <= responses_known


def test_every_body_field_of_the_anthropic_sdk_request_types_is_known() -> None:
    from anthropic.types import message_count_tokens_params, message_create_params, tool_param

    from server.wire import anthropic_messages as am

    headers = {"user_profile_id", "workspace_id"}  # the SDK sends these as headers
    known = {*am.SUPPORTED, *am.IGNORED, *headers}
    assert set(message_create_params.MessageCreateParamsBase.__annotations__) <= known
    assert set(message_count_tokens_params.MessageCountTokensParams.__annotations__) <= known
    tool_fields = {"type", "name", "description", "input_schema", *am.TOOL_PASSTHROUGH}
    assert set(tool_param.ToolParam.__annotations__) <= tool_fields
