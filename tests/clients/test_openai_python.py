"""The official `openai` Python SDK against the gateway: Chat Completions and Responses,
each plain, streamed, a tool round trip, structured output (`parse`) and usage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.clients.conftest import Served
from tests.clients.expect import (
    CITY,
    CITY_ARGS,
    OPENAI_MODEL,
    PROMPT,
    TOOL_PROMPT,
    WEATHER_SCHEMA,
    City,
    is_mock_answer,
)

CHAT_TOOL: Any = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}
RESPONSES_TOOL: Any = {"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA}


@pytest.fixture(scope="module")
def client(gateway: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0) as c:
        yield c


def test_chat_plain_and_usage(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": PROMPT}]
    )
    assert is_mock_answer(r.choices[0].message.content)
    assert r.usage is not None and r.usage.completion_tokens == len(
        (r.choices[0].message.content or "").split()
    )
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_stream_with_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": PROMPT}], stream=True,
        stream_options={"include_usage": True},
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert is_mock_answer(text)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(text.split())


def test_chat_tool_round_trip(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": TOOL_PROMPT}]
    first = client.chat.completions.create(model=OPENAI_MODEL, messages=messages, tools=[CHAT_TOOL])
    call = (first.choices[0].message.tool_calls or [])[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == CITY_ARGS
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    second = client.chat.completions.create(model=OPENAI_MODEL, messages=messages, tools=[CHAT_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert is_mock_answer(second.choices[0].message.content, TOOL_PROMPT)


def test_chat_streamed_tool_call_has_no_empty_text(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": TOOL_PROMPT}],
        tools=[CHAT_TOOL], stream=True,
    ))
    assert all(c.choices[0].delta.content is None for c in chunks if c.choices)
    args = "".join(
        (c.choices[0].delta.tool_calls or [])[0].function.arguments or ""  # type: ignore[union-attr]
        for c in chunks if c.choices and c.choices[0].delta.tool_calls
    )
    assert json.loads(args) == CITY_ARGS


def test_chat_structured_output(client: openai.OpenAI) -> None:
    r = client.chat.completions.parse(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": "a city"}], response_format=City
    )
    assert r.choices[0].message.parsed == CITY


def test_responses_plain_stream_and_usage(client: openai.OpenAI) -> None:
    r = client.responses.create(model=OPENAI_MODEL, input=PROMPT, top_logprobs=2,
                                prompt_cache_retention="24h", max_tool_calls=3)
    assert is_mock_answer(r.output_text)
    assert r.usage is not None and r.usage.output_tokens == len(r.output_text.split())
    with client.responses.stream(model=OPENAI_MODEL, input=PROMPT) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert is_mock_answer("".join(deltas)) and final.usage is not None


def test_responses_tool_round_trip(client: openai.OpenAI) -> None:
    first = client.responses.create(model=OPENAI_MODEL, input=TOOL_PROMPT, tools=[RESPONSES_TOOL])
    call = next(item for item in first.output if item.type == "function_call")
    assert json.loads(call.arguments) == CITY_ARGS
    second = client.responses.create(
        model=OPENAI_MODEL, tools=[RESPONSES_TOOL],
        input=[{"role": "user", "content": TOOL_PROMPT}, call.model_dump(exclude_none=True),
               {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )
    assert is_mock_answer(second.output_text, TOOL_PROMPT)


def test_responses_structured_output(client: openai.OpenAI) -> None:
    r = client.responses.parse(model=OPENAI_MODEL, input="a city", text_format=City)
    assert r.output_parsed == CITY


def test_clamped_output_limit_is_said(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": PROMPT}], max_tokens=128000
    )
    note = (r.model_extra or {})["gateway"]["max_output_tokens"]
    assert note["requested"] == 128000 and note["sent"] < 128000
