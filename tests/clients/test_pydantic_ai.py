"""pydantic-ai agents against the gateway, on OpenAI Chat, OpenAI Responses and Anthropic
models: plain, streamed, a tool, a structured result (tool output and native output, the
latter also with a tool, where the Mock must call a tool when one is required) and usage."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic_ai import Agent, NativeOutput
from pydantic_ai.models import Model
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.anthropic import AnthropicProvider
from pydantic_ai.providers.openai import OpenAIProvider

from tests.clients.conftest import Served
from tests.clients.expect import (
    CITY,
    CLAUDE,
    OPENAI_MODEL,
    PROMPT,
    TOOL_PROMPT,
    City,
    is_mock_answer,
)

SURFACES = ("chat", "responses", "anthropic")


def model(gateway: Served, surface: str) -> Model:
    if surface == "anthropic":
        return AnthropicModel(CLAUDE, provider=AnthropicProvider(api_key=gateway.key, base_url=gateway.url))
    provider = OpenAIProvider(base_url=gateway.v1, api_key=gateway.key)
    if surface == "chat":
        return OpenAIChatModel(OPENAI_MODEL, provider=provider)
    return OpenAIResponsesModel(OPENAI_MODEL, provider=provider)


def weather_agent(m: Model, output: Any = str) -> Agent[None, Any]:
    agent: Agent[None, Any] = Agent(m, output_type=output)

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    return agent


@pytest.mark.parametrize("surface", SURFACES)
def test_plain_stream_and_usage(gateway: Served, surface: str) -> None:
    agent = Agent(model(gateway, surface))
    result = agent.run_sync(PROMPT)
    assert is_mock_answer(result.output)
    assert result.usage.output_tokens == len(result.output.split())

    async def streamed() -> str:
        async with agent.run_stream(PROMPT) as run:
            return "".join([piece async for piece in run.stream_text(delta=True)])

    assert is_mock_answer(asyncio.run(streamed()))


@pytest.mark.parametrize("surface", SURFACES)
def test_tool_round_trip(gateway: Served, surface: str) -> None:
    result = weather_agent(model(gateway, surface)).run_sync(TOOL_PROMPT)
    assert is_mock_answer(result.output, TOOL_PROMPT)
    assert result.usage.requests == 2 and result.usage.tool_calls == 1


# pydantic-ai's profile of claude-sonnet-4 has no native (output_config) structured output
STRUCTURED = [(s, o) for s in SURFACES for o in ("tool", "native") if (s, o) != ("anthropic", "native")]


@pytest.mark.parametrize(("surface", "output"), STRUCTURED)
def test_structured_result_with_a_tool(gateway: Served, surface: str, output: str) -> None:
    kind: Any = City if output == "tool" else NativeOutput(City)
    result = weather_agent(model(gateway, surface), kind).run_sync(TOOL_PROMPT)
    assert result.output == CITY
