"""LiteLLM as a client (`litellm.completion`) against the gateway, through its OpenAI
provider (`openai/<model>`, `api_base` = `/v1`) and its Anthropic provider
(`anthropic/<model>`, `api_base` = the root): plain, streamed, a tool round trip,
structured output (`response_format`) and usage. LiteLLM sends `max_tokens` of its own
for Claude models it does not know; the gateway clamps it to the deployment's limit."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import

import litellm

from tests.clients.conftest import Served
from tests.clients.expect import (
    CITY,
    CITY_ARGS,
    CLAUDE,
    OPENAI_MODEL,
    PROMPT,
    TOOL_PROMPT,
    WEATHER_SCHEMA,
    City,
    is_mock_answer,
)

TOOL: Any = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}
SURFACES = ("openai", "anthropic")


def target(gateway: Served, surface: str) -> dict[str, Any]:
    if surface == "openai":
        return {"model": f"openai/{OPENAI_MODEL}", "api_base": gateway.v1, "api_key": gateway.key}
    return {"model": f"anthropic/{CLAUDE}", "api_base": gateway.url, "api_key": gateway.key}


@pytest.mark.parametrize("surface", SURFACES)
def test_plain_and_usage(gateway: Served, surface: str) -> None:
    r: Any = litellm.completion(messages=[{"role": "user", "content": PROMPT}],
                                **target(gateway, surface))
    text = r.choices[0].message.content
    assert is_mock_answer(text)
    assert r.usage.completion_tokens == len(text.split()) and r.usage.prompt_tokens > 0


@pytest.mark.parametrize("surface", SURFACES)
def test_stream_with_usage(gateway: Served, surface: str) -> None:
    chunks = list(litellm.completion(
        messages=[{"role": "user", "content": PROMPT}], stream=True,
        stream_options={"include_usage": True}, **target(gateway, surface),
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert is_mock_answer(text)
    usage = [getattr(c, "usage", None) for c in chunks if getattr(c, "usage", None)]
    assert usage and usage[-1].completion_tokens == len(text.split())


@pytest.mark.parametrize("surface", SURFACES)
def test_tool_round_trip(gateway: Served, surface: str) -> None:
    messages: list[Any] = [{"role": "user", "content": TOOL_PROMPT}]
    first: Any = litellm.completion(messages=messages, tools=[TOOL], **target(gateway, surface))
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == CITY_ARGS
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    second: Any = litellm.completion(messages=messages, tools=[TOOL], **target(gateway, surface))
    assert is_mock_answer(second.choices[0].message.content, TOOL_PROMPT)


@pytest.mark.parametrize("surface", SURFACES)
def test_structured_output(gateway: Served, surface: str) -> None:
    r: Any = litellm.completion(messages=[{"role": "user", "content": "a city"}],
                                response_format=City, **target(gateway, surface))
    assert City.model_validate_json(r.choices[0].message.content) == CITY
