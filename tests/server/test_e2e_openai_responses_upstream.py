"""End to end with `[providers.openai] api = "responses"`: the gateway talks to OpenAI
through the Responses API (`POST /v1/responses`), whatever format the client speaks.

The gateway runs in live mode (`tests/server/live.py`) with the fake provider behind it
and the official `openai` / `anthropic` SDKs in front (sync clients in worker threads).
Every test checks both ends: what the fake received (Responses-shaped) and what the SDK
parsed (Chat- or Messages-shaped), plus cost and the ledger row.

Expected token counts come from the fake's documented rule (`tests.fakes.replies`) applied
to the body it received; expected money is computed here from the prices in
`core/default_catalog.toml` with Decimal, independently of `core.billing`.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import openai
import pytest
import trio
from attrs import define

from adapters.providers.http_provider import OPENAI_RESPONSES, HttpProvider
from adapters.storage.records import UsageRecord
from tests.fakes import FakeProvider, Fault, running_fake_provider
from tests.fakes.replies import Reply, plan_reply
from tests.server.conftest import Running
from tests.server.live import PROVIDER_KEYS, live_gateway

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
CATALOG: dict[str, Any] = tomllib.loads((ROOT / "core" / "default_catalog.toml").read_text())
GPT = "gpt-4o-mini"
RESPONSES_CONFIG = '\n[providers.openai]\napi = "responses"\n'
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
CHAT_TOOLS: Any = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city", "parameters": SCHEMA}}]
ANTHROPIC_TOOLS: Any = [{"name": "get_weather", "description": "The weather in a city",
                         "input_schema": SCHEMA}]
RESPONSES_TOOLS = [{"type": "function", "name": "get_weather",
                    "description": "The weather in a city", "parameters": SCHEMA, "strict": False}]


@define
class Live:
    gw: Running
    fake: FakeProvider
    oai: openai.OpenAI
    ant: anthropic.Anthropic

    def only_request_since(self, before: int) -> dict[str, Any]:
        sent = self.fake.requests[before:]
        assert [r.path for r in sent] == ["/v1/responses"]
        headers = sent[0].headers
        assert headers["authorization"] == "Bearer " + PROVIDER_KEYS["OPENAI_API_KEY"]
        assert "x-api-key" not in headers
        body: dict[str, Any] = sent[0].json()
        assert body["model"] == GPT and body["store"] is False
        assert "messages" not in body and "max_completion_tokens" not in body
        return body


@pytest.fixture
async def live(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Live]:
    async with running_fake_provider() as fake:
        gw = await live_gateway(nursery, tmp_path, fake, config=RESPONSES_CONFIG)
        oai = openai.OpenAI(api_key=gw.key, base_url=gw.url + "/v1", max_retries=0, timeout=30)
        ant = anthropic.Anthropic(api_key=gw.key, base_url=gw.url, max_retries=0, timeout=30)
        yield Live(gw, fake, oai, ant)
        oai.close()
        ant.close()
        gw.stop.set()


async def in_thread(fn: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(fn)


def price() -> dict[str, str]:
    found: dict[str, str] = CATALOG["models"][GPT]["deployments"][0]["price"]
    return found


def expected_cost(reply: Reply, cached: int) -> Decimal:
    p = price()
    per_million = (reply.input_tokens * Decimal(p["input"]) + cached * Decimal(p["cached_input"])
                   + reply.output_tokens * Decimal(p["output"]))
    return per_million / Decimal(1_000_000)


def extra(model: Any, name: str) -> Any:
    extras = model.model_extra or {}
    assert name in extras, extras
    return extras[name]


async def ledger_row(gw: Running, request_id: str) -> UsageRecord:
    now = datetime.now(UTC)
    rows = await gw.services.storage.usage_rows("t1", now - timedelta(days=1), now + timedelta(days=1))
    mine = [r for r in rows if r.request_id == request_id]
    assert len(mine) == 1, rows
    return mine[0]


async def check_billed(
    live: Live, gateway: dict[str, Any], reply: Reply, cached: int, *, endpoint: str, stream: bool
) -> None:
    want = expected_cost(reply, cached)
    assert want > 0
    assert Decimal(gateway["cost_usd"]) == want
    assert gateway["provider"] == "openai"
    row = await ledger_row(live.gw, gateway["request_id"])
    assert (row.cost, row.price_version, row.provider, row.status) == (
        want, price()["version"], "openai", "ok")
    assert (row.input_tokens, row.cached_input_tokens, row.output_tokens) == (
        reply.input_tokens, cached, reply.output_tokens)
    assert (row.endpoint, row.stream, row.attempts) == (endpoint, stream, 1)


async def test_the_openai_adapter_is_the_responses_one(live: Live) -> None:
    provider = live.gw.services.gateway.providers["openai"]
    assert isinstance(provider, HttpProvider) and provider.dialect is OPENAI_RESPONSES


# ---- Chat Completions in front ---------------------------------------------------------


async def test_chat_completion_goes_to_responses_with_text_usage_and_cost(live: Live) -> None:
    live.fake.cached_tokens = 5
    before = len(live.fake.requests)
    messages: Any = [{"role": "system", "content": "You are terse."},
                     {"role": "user", "content": "hello there friend"}]
    completion = await in_thread(lambda: live.oai.chat.completions.create(
        model=GPT, messages=messages, max_tokens=50, temperature=0.3))

    body = live.only_request_since(before)
    assert body["instructions"] == "You are terse."
    assert body["input"] == [{"type": "message", "role": "user",
                              "content": [{"type": "input_text", "text": "hello there friend"}]}]
    assert body["max_output_tokens"] == 50 and body["temperature"] == 0.3
    assert "stream" not in body
    reply = plan_reply(body)
    assert reply.input_tokens == (3 + 4) + (3 + 4)

    assert completion.model == GPT
    choice = completion.choices[0]
    assert choice.message.content == "Echo: hello there friend"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == reply.input_tokens + 5
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 5
    assert completion.usage.completion_tokens == reply.output_tokens == 4
    await check_billed(live, extra(completion, "gateway"), reply, 5,
                       endpoint="chat.completions", stream=False)


async def test_chat_stream_goes_to_responses_with_every_delta_and_usage(live: Live) -> None:
    live.fake.cached_tokens = 2
    before = len(live.fake.requests)
    messages: Any = [{"role": "user", "content": "stream these four words"}]

    def run() -> list[Any]:
        return list(live.oai.chat.completions.create(
            model=GPT, messages=messages, stream=True, stream_options={"include_usage": True}))

    chunks = await in_thread(run)

    body = live.only_request_since(before)
    assert body["stream"] is True and "stream_options" not in body
    await live.fake.wait_for(lambda f: f.streams_completed == 1)
    reply = plan_reply(body)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert deltas == ["Echo:", " stream", " these", " four", " words"]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    assert usage.prompt_tokens == reply.input_tokens + 2
    assert usage.completion_tokens == reply.output_tokens == 5
    gateway = next(extra(c, "gateway") for c in reversed(chunks) if "gateway" in (c.model_extra or {}))
    await check_billed(live, gateway, reply, 2, endpoint="chat.completions", stream=True)


async def test_chat_tool_call_whole_and_streamed(live: Live) -> None:
    messages: Any = [{"role": "user", "content": "weather in Paris"}]
    choice: Any = {"type": "function", "function": {"name": "get_weather"}}
    before = len(live.fake.requests)
    completion = await in_thread(lambda: live.oai.chat.completions.create(
        model=GPT, messages=messages, tools=CHAT_TOOLS, tool_choice=choice))

    body = live.only_request_since(before)
    assert body["tools"] == RESPONSES_TOOLS
    assert body["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert completion.choices[0].finish_reason == "tool_calls"
    (call,) = completion.choices[0].message.tool_calls or []
    assert (call.id, call.function.name) == ("call_0", "get_weather")  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"text": "weather in Paris"}  # type: ignore[union-attr]
    assert completion.usage is not None
    assert completion.usage.completion_tokens == plan_reply(body).output_tokens
    await check_billed(live, extra(completion, "gateway"), plan_reply(body), 0,
                       endpoint="chat.completions", stream=False)

    before = len(live.fake.requests)

    def run() -> Any:
        with live.oai.chat.completions.stream(
            model=GPT, messages=[{"role": "user", "content": "please use tool for Rome"}],
            tools=CHAT_TOOLS, tool_choice="required",
        ) as stream:
            return stream.get_final_completion()

    final = await in_thread(run)
    body = live.only_request_since(before)
    assert body["tool_choice"] == "required" and body["stream"] is True
    assert final.choices[0].finish_reason == "tool_calls"
    (call,) = final.choices[0].message.tool_calls
    assert (call.id, call.function.name) == ("call_0", "get_weather")
    assert json.loads(call.function.arguments) == {"text": "please use tool for Rome"}


async def test_chat_tool_result_turn_becomes_function_call_items(live: Live) -> None:
    before = len(live.fake.requests)
    messages: Any = [
        {"role": "user", "content": "weather in Paris"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_0", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "sunny, 21 C"},
    ]
    completion = await in_thread(lambda: live.oai.chat.completions.create(
        model=GPT, messages=messages, tools=CHAT_TOOLS))

    body = live.only_request_since(before)
    assert body["input"] == [
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "weather in Paris"}]},
        {"type": "function_call", "call_id": "call_0", "name": "get_weather",
         "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_0", "output": "sunny, 21 C"},
    ]
    assert completion.choices[0].message.content == "Echo: weather in Paris"
    assert completion.choices[0].finish_reason == "stop"


# ---- Anthropic Messages in front -------------------------------------------------------


async def test_messages_call_goes_to_responses_with_text_usage_and_cost(live: Live) -> None:
    live.fake.cached_tokens = 3
    before = len(live.fake.requests)
    message = await in_thread(lambda: live.ant.messages.create(
        model=GPT, max_tokens=50, system="Be brief.",
        messages=[{"role": "user", "content": "hi there"}]))

    body = live.only_request_since(before)
    assert body["instructions"] == "Be brief." and body["max_output_tokens"] == 50
    reply = plan_reply(body)
    assert message.model == GPT
    assert message.content[0].text == "Echo: hi there"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    # Anthropic's meaning: input_tokens excludes what was read from the cache
    assert message.usage.input_tokens == reply.input_tokens == (2 + 4) + (2 + 4)
    assert message.usage.cache_read_input_tokens == 3
    assert message.usage.output_tokens == reply.output_tokens == 3
    await check_billed(live, extra(message, "gateway"), reply, 3, endpoint="messages", stream=False)


async def test_messages_length_limit_is_max_tokens(live: Live) -> None:
    before = len(live.fake.requests)
    message = await in_thread(lambda: live.ant.messages.create(
        model=GPT, max_tokens=2, messages=[{"role": "user", "content": "one two three four"}]))

    body = live.only_request_since(before)
    assert body["max_output_tokens"] == 2
    assert message.stop_reason == "max_tokens"
    assert message.content[0].text == "Echo: one"  # type: ignore[union-attr]
    assert message.usage.output_tokens == 2


async def test_messages_stream_with_tool_use(live: Live) -> None:
    live.fake.cached_tokens = 4
    before = len(live.fake.requests)

    def run() -> tuple[list[str], Any, Any]:
        with live.ant.messages.stream(
            model=GPT, max_tokens=100, tools=ANTHROPIC_TOOLS, tool_choice={"type": "any"},
            messages=[{"role": "user", "content": "use tool for Lima"}],
        ) as stream:
            partials: list[str] = []
            gateway = None
            for event in stream:
                if event.type == "input_json":
                    partials.append(event.partial_json)
                if event.type == "message_delta":
                    gateway = (event.model_extra or {}).get("gateway")
            return partials, stream.get_final_message(), gateway

    partials, final, gateway = await in_thread(run)

    body = live.only_request_since(before)
    assert body["stream"] is True
    assert body["tools"] == RESPONSES_TOOLS and body["tool_choice"] == "required"
    reply = plan_reply(body)
    assert len(partials) == 2  # the fake sends the arguments in two fragments
    assert final.stop_reason == "tool_use"
    (block,) = final.content
    assert (block.type, block.id, block.name) == ("tool_use", "call_0", "get_weather")
    assert block.input == {"text": "use tool for Lima"}
    assert final.usage.output_tokens == reply.output_tokens
    assert gateway is not None
    await check_billed(live, gateway, reply, 4, endpoint="messages", stream=True)


async def test_messages_stream_text(live: Live) -> None:
    before = len(live.fake.requests)

    def run() -> tuple[list[str], Any]:
        with live.ant.messages.stream(
            model=GPT, max_tokens=64, messages=[{"role": "user", "content": "tell me a tale"}]
        ) as stream:
            return list(stream.text_stream), stream.get_final_message()

    pieces, final = await in_thread(run)
    body = live.only_request_since(before)
    assert pieces == ["Echo:", " tell", " me", " a", " tale"]
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == plan_reply(body).input_tokens


# ---- failures ------------------------------------------------------------------------------


async def test_a_429_from_responses_is_retried_on_responses(live: Live) -> None:
    live.fake.script(Fault(status=429, headers={"retry-after": "0"}))
    messages: Any = [{"role": "user", "content": "hello"}]
    completion = await in_thread(lambda: live.oai.chat.completions.create(
        model=GPT, messages=messages))
    assert [r.path for r in live.fake.requests] == ["/v1/responses", "/v1/responses"]
    assert completion.choices[0].message.content == "Echo: hello"
    gateway = extra(completion, "gateway")
    assert [(a["provider"], a["outcome"]) for a in gateway["attempts"]] == [
        ("openai", "rate_limited"), ("openai", "ok")]


async def test_an_error_event_mid_stream_reaches_the_client_as_an_error(live: Live) -> None:
    live.fake.script(Fault(error_event_after=5))
    messages: Any = [{"role": "user", "content": "one two three"}]

    def run() -> list[str]:
        got: list[str] = []
        for chunk in live.oai.chat.completions.create(model=GPT, messages=messages, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
        return got

    with pytest.raises(openai.APIError):
        await in_thread(run)
    # the first chunk reached the client, so there is no silent fallback afterwards
    assert [r.path for r in live.fake.requests] == ["/v1/responses"]
