"""The official `anthropic` Python SDK against the gateway (base URL: the root): plain,
streamed, a tool round trip, structured output (`messages.parse`), usage, token counting
and the model list."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.clients.conftest import Served
from tests.clients.expect import (
    CITY,
    CITY_ARGS,
    CLAUDE,
    PROMPT,
    TOOL_PROMPT,
    WEATHER_SCHEMA,
    City,
    is_mock_answer,
)

TOOL: Any = {"name": "get_weather", "description": "weather", "input_schema": WEATHER_SCHEMA}


@pytest.fixture(scope="module")
def client(gateway: Served) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0) as c:
        yield c


def test_plain_and_usage(client: anthropic.Anthropic) -> None:
    m = client.messages.create(
        model=CLAUDE, max_tokens=256, messages=[{"role": "user", "content": PROMPT}]
    )
    text = "".join(b.text for b in m.content if b.type == "text")
    assert is_mock_answer(text) and m.stop_reason == "end_turn"
    assert m.usage.output_tokens == len(text.split()) and m.usage.input_tokens > 0


def test_stream(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=CLAUDE, max_tokens=256, messages=[{"role": "user", "content": PROMPT}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert is_mock_answer(text) and final.usage.output_tokens == len(text.split())


def test_tool_round_trip_with_the_ai_sdk_tool_fields(client: anthropic.Anthropic) -> None:
    tool = {**TOOL, "eager_input_streaming": True, "cache_control": {"type": "ephemeral"}}
    messages: list[Any] = [{"role": "user", "content": TOOL_PROMPT}]
    first = client.messages.create(
        model=CLAUDE, max_tokens=256, messages=messages, tools=[tool],
        cache_control={"type": "ephemeral"},
    )
    call = next(b for b in first.content if b.type == "tool_use")
    assert first.stop_reason == "tool_use" and call.input == CITY_ARGS
    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                      "content": "sunny"}]},
    ]
    second = client.messages.create(model=CLAUDE, max_tokens=256, messages=messages, tools=[tool])
    assert second.stop_reason == "end_turn"
    assert is_mock_answer("".join(b.text for b in second.content if b.type == "text"), TOOL_PROMPT)


def test_streamed_tool_call(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=CLAUDE, max_tokens=256, tools=[TOOL],
        messages=[{"role": "user", "content": TOOL_PROMPT}],
    ) as stream:
        final = stream.get_final_message()
    call = next(b for b in final.content if b.type == "tool_use")
    assert call.input == CITY_ARGS


def test_structured_output(client: anthropic.Anthropic) -> None:
    m = client.messages.parse(
        model=CLAUDE, max_tokens=256, messages=[{"role": "user", "content": "a city"}],
        output_format=City,
    )
    assert m.parsed_output == CITY
    raw = client.messages.create(
        model=CLAUDE, max_tokens=256, messages=[{"role": "user", "content": "a city"}],
        output_config={"format": {"type": "json_schema", "schema": City.model_json_schema()}},
    )
    assert json.loads(raw.content[0].text) == CITY.model_dump()  # type: ignore[union-attr]


def test_count_tokens_and_models(client: anthropic.Anthropic) -> None:
    count = client.messages.count_tokens(
        model=CLAUDE, messages=[{"role": "user", "content": PROMPT}], tools=[TOOL]
    )
    assert count.input_tokens > len(PROMPT.split())
    models = client.models.list()
    assert CLAUDE in [m.id for m in models.data]
    assert all(m.display_name and m.created_at for m in models.data)


def test_missing_key_hint(gateway: Served) -> None:
    with anthropic.Anthropic(base_url=gateway.url, api_key="nope", max_retries=0) as c:
        with pytest.raises(anthropic.AuthenticationError) as err:
            c.messages.create(model=CLAUDE, max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert "x-api-key" in str(err.value) and "Bearer" in str(err.value)
