"""LangChain's `ChatOpenAI` (Chat Completions and `use_responses_api`) and `ChatAnthropic`
against the gateway: plain, streamed (with `stream_usage`), a tool round trip,
`with_structured_output`, usage metadata, and Claude token counting."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from tests.clients.conftest import Served
from tests.clients.expect import (
    CITY,
    CITY_ARGS,
    CLAUDE,
    OPENAI_MODEL,
    PROMPT,
    TOOL_PROMPT,
    City,
    is_mock_answer,
)


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


def models(gateway: Served) -> dict[str, BaseChatModel]:
    return {
        "chat": ChatOpenAI(model=OPENAI_MODEL, base_url=gateway.v1, api_key=gateway.key,  # type: ignore[arg-type]
                           stream_usage=True, max_retries=0),
        "responses": ChatOpenAI(model=OPENAI_MODEL, base_url=gateway.v1, api_key=gateway.key,  # type: ignore[arg-type]
                                use_responses_api=True, stream_usage=True, max_retries=0),
        "anthropic": ChatAnthropic(model=CLAUDE, base_url=gateway.url, api_key=gateway.key,  # type: ignore[arg-type,call-arg]
                                   max_retries=0),
    }


SURFACES = ("chat", "responses", "anthropic")


@pytest.fixture(scope="module")
def chat_models(gateway: Served) -> dict[str, BaseChatModel]:
    return models(gateway)


@pytest.mark.parametrize("surface", SURFACES)
def test_plain_and_usage(chat_models: dict[str, BaseChatModel], surface: str) -> None:
    r = chat_models[surface].invoke(PROMPT)
    assert is_mock_answer(r.text)
    usage: Any = r.usage_metadata  # type: ignore[attr-defined]
    assert usage["output_tokens"] == len(r.text.split()) and usage["input_tokens"] > 0


@pytest.mark.parametrize("surface", SURFACES)
def test_stream_with_usage(chat_models: dict[str, BaseChatModel], surface: str) -> None:
    total: AIMessageChunk | None = None
    for chunk in chat_models[surface].stream(PROMPT):
        assert isinstance(chunk, AIMessageChunk)
        total = chunk if total is None else total + chunk
    assert total is not None and is_mock_answer(total.text)
    assert total.usage_metadata is not None
    assert total.usage_metadata["output_tokens"] == len(total.text.split())


@pytest.mark.parametrize("surface", SURFACES)
def test_tool_round_trip(chat_models: dict[str, BaseChatModel], surface: str) -> None:
    bound = chat_models[surface].bind_tools([get_weather])
    messages: list[BaseMessage] = [HumanMessage(TOOL_PROMPT)]
    first = bound.invoke(messages)
    calls = first.tool_calls  # type: ignore[attr-defined]
    assert [(c["name"], c["args"]) for c in calls] == [("get_weather", CITY_ARGS)]
    messages += [first, ToolMessage(get_weather.invoke(calls[0]["args"]), tool_call_id=calls[0]["id"])]
    second = bound.invoke(messages)
    assert is_mock_answer(second.text, TOOL_PROMPT)


@pytest.mark.parametrize("surface", SURFACES)
def test_structured_output(chat_models: dict[str, BaseChatModel], surface: str) -> None:
    assert chat_models[surface].with_structured_output(City).invoke("a city") == CITY


def test_claude_json_schema_structured_output_and_token_count(
    chat_models: dict[str, BaseChatModel],
) -> None:
    claude = chat_models["anthropic"]
    assert claude.with_structured_output(City, method="json_schema").invoke("a city") == CITY
    assert claude.get_num_tokens_from_messages([HumanMessage(PROMPT)]) > len(PROMPT.split())
