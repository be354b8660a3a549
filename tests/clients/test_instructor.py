"""instructor against the gateway: `response_model` in its tool mode (a named tool call),
its JSON-schema mode (`response_format` json_schema), its JSON mode (`json_object`, the
schema in the system message), its Anthropic tools mode, partial streaming, and the raw
completion's usage."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import instructor
import openai
import pytest

from tests.clients.conftest import Served
from tests.clients.expect import CITY, CLAUDE, OPENAI_MODEL, City

ASK = [{"role": "user", "content": "a city"}]


@pytest.fixture(scope="module")
def raw(gateway: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0) as c:
        yield c


@pytest.mark.parametrize("mode", [instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA, instructor.Mode.JSON])
def test_openai_modes(raw: openai.OpenAI, mode: instructor.Mode) -> None:
    client = instructor.from_openai(raw, mode=mode)
    city, completion = client.chat.completions.create_with_completion(
        model=OPENAI_MODEL, response_model=City, messages=ASK, max_retries=0,  # type: ignore[arg-type]
    )
    assert city.model_dump() == CITY.model_dump()  # instructor returns a subclass
    assert completion.usage.completion_tokens > 0  # the raw completion's usage


def test_partial_stream(raw: openai.OpenAI) -> None:
    client = instructor.from_openai(raw, mode=instructor.Mode.TOOLS)
    partials = list(client.chat.completions.create_partial(
        model=OPENAI_MODEL, response_model=City, messages=ASK, max_retries=0,  # type: ignore[arg-type]
    ))
    assert partials and City.model_validate(partials[-1].model_dump()) == CITY


def test_anthropic_tools(gateway: Served) -> None:
    with anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0) as raw:
        client = instructor.from_anthropic(raw, mode=instructor.Mode.ANTHROPIC_TOOLS)
        city = client.messages.create(
            model=CLAUDE, max_tokens=256, response_model=City, messages=ASK, max_retries=0,  # type: ignore[arg-type]
        )
    assert city.model_dump() == CITY.model_dump()
