"""The OpenAI Agents SDK against the gateway, with its Chat Completions model and its
Responses model on an `AsyncOpenAI` client pointed at the gateway: plain, streamed, a
function tool, `output_type`, model settings the gateway must accept, and usage."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agents import (
    Agent,
    Model,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from tests.clients.conftest import Served
from tests.clients.expect import CITY, OPENAI_MODEL, PROMPT, TOOL_PROMPT, City, is_mock_answer

SURFACES = ("chat", "responses")
SETTINGS = ModelSettings(top_logprobs=2, prompt_cache_retention="24h", max_tokens=128000)


@pytest.fixture(autouse=True, scope="module")
def no_tracing() -> None:
    set_tracing_disabled(True)  # no exporter calls to the outside


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


def model(gateway: Served, surface: str) -> Model:
    client = AsyncOpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0)
    if surface == "chat":
        return OpenAIChatCompletionsModel(model=OPENAI_MODEL, openai_client=client)
    return OpenAIResponsesModel(model=OPENAI_MODEL, openai_client=client)


@pytest.mark.parametrize("surface", SURFACES)
def test_plain_stream_and_usage(gateway: Served, surface: str) -> None:
    agent = Agent(name="a", model=model(gateway, surface), model_settings=SETTINGS)

    async def run() -> tuple[Any, str, Any]:
        result = await Runner.run(agent, PROMPT)
        streamed = Runner.run_streamed(agent, PROMPT)
        deltas = [
            e.data.delta async for e in streamed.stream_events()
            if e.type == "raw_response_event" and getattr(e.data, "type", "") == "response.output_text.delta"
        ]
        return result, "".join(deltas), streamed

    result, text, streamed = asyncio.run(run())
    assert is_mock_answer(result.final_output)
    assert result.context_wrapper.usage.output_tokens == len(result.final_output.split())
    assert is_mock_answer(text) and is_mock_answer(streamed.final_output)


@pytest.mark.parametrize("surface", SURFACES)
def test_tool_round_trip(gateway: Served, surface: str) -> None:
    agent = Agent(name="a", model=model(gateway, surface), tools=[get_weather])
    result = asyncio.run(Runner.run(agent, TOOL_PROMPT))
    assert is_mock_answer(result.final_output, TOOL_PROMPT)
    assert [i.type for i in result.new_items] == [
        "tool_call_item", "tool_call_output_item", "message_output_item"
    ]


@pytest.mark.parametrize("surface", SURFACES)
def test_output_type(gateway: Served, surface: str) -> None:
    agent = Agent(name="a", model=model(gateway, surface), output_type=City)
    assert asyncio.run(Runner.run(agent, "a city")).final_output == CITY
