"""End to end across providers: the official SDKs in front, the fake provider behind.

The gateway runs in live mode (`tests/server/live.py`): its OpenAI and Anthropic adapters
talk to the fake provider (`tests/fakes`), which speaks both wire formats on real sockets.
The clients are the sync `openai` and `anthropic` SDKs, run in worker threads so the
gateway keeps serving on the trio loop. Every test looks at both ends: what the fake
received (in the provider's own format) and what the SDK parsed (in the client's format).

Expected token counts come from the fake's documented rule (`tests.fakes.replies`) applied
to the body it received; expected money is computed here from the prices in
`core/default_catalog.toml` with Decimal, independently of `core.billing`.
"""

from __future__ import annotations

import json
import logging
import re
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

from adapters.config.loader import load_settings
from adapters.storage.records import UsageRecord
from adapters.telemetry import JsonFormatter
from server.services import serving_catalog
from tests.fakes import FakeProvider, Fault, RecordedRequest, running_fake_provider
from tests.fakes.replies import Reply, plan_reply
from tests.server.conftest import Running
from tests.server.live import PROVIDER_KEYS, live_gateway

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
CATALOG: dict[str, Any] = tomllib.loads((ROOT / "core" / "default_catalog.toml").read_text())
CLAUDE = "claude-3.5-haiku"
GPT = "gpt-4o-mini"
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city",
    "schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@define
class Live:
    gw: Running
    fake: FakeProvider
    oai: openai.OpenAI
    ant: anthropic.Anthropic

    def sent_since(self, before: int) -> list[RecordedRequest]:
        return self.fake.requests[before:]

    def only_request_since(self, before: int, path: str) -> dict[str, Any]:
        sent = self.sent_since(before)
        assert [r.path for r in sent] == [path]
        body: dict[str, Any] = sent[0].json()
        return body


@pytest.fixture
async def live(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Live]:
    async with running_fake_provider() as fake:
        gw = await live_gateway(nursery, tmp_path, fake)
        oai = openai.OpenAI(api_key=gw.key, base_url=gw.url + "/v1", max_retries=0, timeout=30)
        ant = anthropic.Anthropic(api_key=gw.key, base_url=gw.url, max_retries=0, timeout=30)
        yield Live(gw, fake, oai, ant)
        oai.close()
        ant.close()
        gw.stop.set()


async def in_thread(fn: Callable[[], T]) -> T:
    """Run a blocking SDK call off the trio loop (the gateway serves on the loop)."""
    return await trio.to_thread.run_sync(fn)


def price_of(model: str) -> dict[str, str]:
    price: dict[str, str] = CATALOG["models"][model]["deployments"][0]["price"]
    return price


def expected_cost(model: str, *, uncached: int, cached: int, output: int) -> Decimal:
    """Catalog price (USD per 1M tokens) x tokens, exactly; these amounts need no rounding."""
    p = price_of(model)
    per_million = (
        uncached * Decimal(p["input"])
        + cached * Decimal(p["cached_input"])
        + output * Decimal(p["output"])
    )
    return per_million / Decimal(1_000_000)


def reply_to(body: dict[str, Any]) -> Reply:
    """What the fake answered to `body` (its documented, deterministic rule)."""
    return plan_reply(body)


async def ledger_row(gw: Running, request_id: str) -> UsageRecord:
    now = datetime.now(UTC)
    rows = await gw.services.storage.usage_rows("t1", now - timedelta(days=1), now + timedelta(days=1))
    mine = [r for r in rows if r.request_id == request_id]
    assert len(mine) == 1, rows
    return mine[0]


def extra(model: Any, name: str) -> Any:
    """A field the gateway adds to an SDK object (pydantic keeps unknown fields as extras)."""
    extras = model.model_extra or {}
    assert name in extras, extras
    return extras[name]


def upstream_model(gw: Running, model: str) -> str:
    return serving_catalog(gw.services.settings).resolve(model).deployments[0].upstream_model


# ---- cross-format, whole answers ---------------------------------------------------------


async def test_openai_sdk_chat_on_a_claude_model_is_sent_as_anthropic_messages(live: Live) -> None:
    before = len(live.fake.requests)
    messages: Any = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hello there friend"},
    ]
    completion = await in_thread(
        lambda: live.oai.chat.completions.create(model=CLAUDE, messages=messages)
    )

    sent = live.sent_since(before)
    assert [r.path for r in sent] == ["/v1/messages"]
    body = sent[0].json()
    assert body["model"] == upstream_model(live.gw, CLAUDE) == "claude-3-5-haiku-latest"
    assert body["system"] == "You are terse."
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hello there friend"}]}
    ]
    # Anthropic requires max_tokens; with none asked, the deployment's limit capped at 4096
    max_output = CATALOG["models"][CLAUDE]["deployments"][0]["max_output_tokens"]
    assert body["max_tokens"] == min(max_output, 4096)
    assert "stream" not in body
    assert sent[0].headers["x-api-key"] == PROVIDER_KEYS["ANTHROPIC_API_KEY"]
    assert sent[0].headers["anthropic-version"]
    assert "authorization" not in sent[0].headers
    assert all(live.gw.key not in v for v in sent[0].headers.values())

    reply = reply_to(body)
    assert completion.object == "chat.completion"
    assert completion.model == CLAUDE
    choice = completion.choices[0]
    assert choice.message.content == "Echo: hello there friend"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == reply.input_tokens == 4 + 3 + 4 + 3
    assert completion.usage.completion_tokens == reply.output_tokens == 4
    assert completion.usage.total_tokens == reply.input_tokens + reply.output_tokens


async def test_anthropic_sdk_messages_on_a_gpt_model_is_sent_as_chat_completions(live: Live) -> None:
    before = len(live.fake.requests)
    message = await in_thread(
        lambda: live.ant.messages.create(
            model=GPT,
            max_tokens=50,
            system="Be brief.",
            messages=[{"role": "user", "content": "hi there"}],
        )
    )

    body = live.only_request_since(before, "/v1/chat/completions")
    assert body["model"] == upstream_model(live.gw, GPT)
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi there"},
    ]
    assert body["max_completion_tokens"] == 50
    assert "max_tokens" not in body and "system" not in body
    headers = live.fake.requests[before].headers
    assert headers["authorization"] == "Bearer " + PROVIDER_KEYS["OPENAI_API_KEY"]
    assert "x-api-key" not in headers

    reply = reply_to(body)
    assert message.type == "message" and message.role == "assistant"
    assert message.model == GPT
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Echo: hi there"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == reply.input_tokens == 2 + 4 + 2 + 4
    assert message.usage.output_tokens == reply.output_tokens == 3


# ---- cross-format, streams ---------------------------------------------------------------


async def test_openai_sdk_stream_on_a_claude_model_assembles_text_and_usage(live: Live) -> None:
    live.fake.cached_tokens = 7
    before = len(live.fake.requests)
    messages: Any = [{"role": "user", "content": "stream these four words"}]

    def run() -> list[Any]:
        stream = live.oai.chat.completions.create(
            model=CLAUDE, messages=messages, stream=True, stream_options={"include_usage": True}
        )
        return list(stream)

    chunks = await in_thread(run)

    body = live.only_request_since(before, "/v1/messages")
    assert body["stream"] is True
    assert live.fake.streams_completed == 1
    reply = reply_to(body)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: stream these four words"
    assert len({c.id for c in chunks}) == 1
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1] and chunks[-1].choices == []
    usage = usage_chunks[0].usage
    assert usage.prompt_tokens == reply.input_tokens + 7
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 7
    assert usage.completion_tokens == reply.output_tokens == 5
    assert usage.total_tokens == reply.input_tokens + 7 + 5


async def test_anthropic_sdk_stream_on_a_gpt_model_gives_text_usage_and_stop_reason(
    live: Live,
) -> None:
    live.fake.cached_tokens = 3
    before = len(live.fake.requests)

    def run() -> tuple[str, Any, list[str]]:
        with live.ant.messages.stream(
            model=GPT, max_tokens=64, messages=[{"role": "user", "content": "tell me a tale"}]
        ) as stream:
            names = []
            pieces = []
            for event in stream:
                names.append(event.type)
                if event.type == "text":
                    pieces.append(event.text)
            return "".join(pieces), stream.get_final_message(), names

    text, final, names = await in_thread(run)

    body = live.only_request_since(before, "/v1/chat/completions")
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    reply = reply_to(body)
    assert text == "Echo: tell me a tale"
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == reply.output_tokens == 5
    # Anthropic's meaning: input_tokens excludes what was read from the cache
    assert final.usage.input_tokens == reply.input_tokens
    assert final.usage.cache_read_input_tokens == 3


# ---- Responses API -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "path", "cached"),
    [(CLAUDE, "/v1/messages", 0), (GPT, "/v1/chat/completions", 0),
     (CLAUDE, "/v1/messages", 11), ("gpt-4.1", "/v1/chat/completions", 13)],
)  # fmt: skip
async def test_responses_create_bills_the_fakes_usage_at_the_catalog_price(
    live: Live, model: str, path: str, cached: int
) -> None:
    live.fake.cached_tokens = cached
    before = len(live.fake.requests)
    response = await in_thread(
        lambda: live.oai.responses.create(
            model=model, instructions="Answer kindly.", input="what is up today"
        )
    )

    body = live.only_request_since(before, path)
    if path == "/v1/messages":
        assert body["system"] == "Answer kindly."
    else:
        assert body["messages"][0] == {"role": "system", "content": "Answer kindly."}
    reply = reply_to(body)
    assert response.status == "completed"
    assert response.output_text == "Echo: what is up today"
    assert response.usage is not None
    assert response.usage.input_tokens == reply.input_tokens + cached
    assert response.usage.input_tokens_details.cached_tokens == cached
    assert response.usage.output_tokens == reply.output_tokens == 5
    assert response.usage.total_tokens == reply.input_tokens + cached + 5

    want = expected_cost(model, uncached=reply.input_tokens, cached=cached, output=5)
    assert want > 0
    gateway = extra(response, "gateway")
    assert Decimal(gateway["cost_usd"]) == want
    assert gateway["provider"] == CATALOG["models"][model]["owned_by"]
    row = await ledger_row(live.gw, gateway["request_id"])
    assert row.cost == want
    assert row.price_version == price_of(model)["version"]
    assert (row.input_tokens, row.cached_input_tokens, row.output_tokens) == (
        reply.input_tokens, cached, 5
    )
    assert (row.status, row.endpoint, row.provider, row.stream) == (
        "ok", "responses", gateway["provider"], False
    )


@pytest.mark.parametrize(("model", "path"), [(CLAUDE, "/v1/messages"), (GPT, "/v1/chat/completions")])
async def test_responses_stream_on_each_provider(live: Live, model: str, path: str) -> None:
    live.fake.cached_tokens = 2
    before = len(live.fake.requests)

    def run() -> tuple[list[str], list[str], Any]:
        with live.oai.responses.stream(model=model, input="one two three") as stream:
            kinds: list[str] = []
            deltas: list[str] = []
            for event in stream:
                kinds.append(event.type)
                if event.type == "response.output_text.delta":
                    deltas.append(event.delta)
            return kinds, deltas, stream.get_final_response()

    kinds, deltas, final = await in_thread(run)

    body = live.only_request_since(before, path)
    assert body["stream"] is True
    reply = reply_to(body)
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "".join(deltas) == final.output_text == "Echo: one two three"
    assert len(deltas) == 4  # the fake streams one word per event; none merged or lost
    assert final.status == "completed"
    assert final.usage.input_tokens == reply.input_tokens + 2
    assert final.usage.output_tokens == reply.output_tokens == 4

    gateway = extra(final, "gateway")
    want = expected_cost(model, uncached=reply.input_tokens, cached=2, output=4)
    assert Decimal(gateway["cost_usd"]) == want
    row = await ledger_row(live.gw, gateway["request_id"])
    assert (row.cost, row.price_version, row.stream, row.status) == (
        want, price_of(model)["version"], True, "ok"
    )


# ---- tools -------------------------------------------------------------------------------


def openai_tools() -> Any:
    return [{"type": "function", "function": {
        "name": WEATHER_TOOL["name"], "description": WEATHER_TOOL["description"],
        "parameters": WEATHER_TOOL["schema"]}}]  # fmt: skip


def anthropic_tools() -> Any:
    return [{"name": WEATHER_TOOL["name"], "description": WEATHER_TOOL["description"],
             "input_schema": WEATHER_TOOL["schema"]}]  # fmt: skip


async def test_openai_sdk_tool_call_through_a_claude_model(live: Live) -> None:
    before = len(live.fake.requests)
    messages: Any = [{"role": "user", "content": "weather in Paris"}]
    choice: Any = {"type": "function", "function": {"name": "get_weather"}}
    completion = await in_thread(
        lambda: live.oai.chat.completions.create(
            model=CLAUDE, messages=messages, tools=openai_tools(), tool_choice=choice
        )
    )

    body = live.only_request_since(before, "/v1/messages")
    assert body["tools"] == anthropic_tools()
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather"}
    msg = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert msg.content is None
    assert msg.tool_calls is not None and len(msg.tool_calls) == 1
    call = msg.tool_calls[0]
    assert call.type == "function" and call.id == "toolu_0"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"text": "weather in Paris"}  # type: ignore[union-attr]
    assert completion.usage is not None
    assert completion.usage.completion_tokens == reply_to(body).output_tokens


async def test_openai_sdk_streamed_tool_call_through_a_claude_model(live: Live) -> None:
    before = len(live.fake.requests)
    messages: Any = [{"role": "user", "content": "please use tool for Rome"}]

    def run() -> Any:
        with live.oai.chat.completions.stream(
            model=CLAUDE, messages=messages, tools=openai_tools(), tool_choice="required"
        ) as stream:
            return stream.get_final_completion()

    final = await in_thread(run)

    body = live.only_request_since(before, "/v1/messages")
    assert body["tool_choice"] == {"type": "any"}
    assert body["tools"] == anthropic_tools()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert (call.id, call.function.name) == ("toolu_0", "get_weather")
    assert json.loads(call.function.arguments) == {"text": "please use tool for Rome"}


async def test_anthropic_sdk_tool_use_through_a_gpt_model(live: Live) -> None:
    before = len(live.fake.requests)
    message = await in_thread(
        lambda: live.ant.messages.create(
            model=GPT, max_tokens=100, tools=anthropic_tools(),
            tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
            messages=[{"role": "user", "content": "weather in Oslo"}],
        )  # fmt: skip
    )

    body = live.only_request_since(before, "/v1/chat/completions")
    assert body["tools"] == openai_tools()
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    assert message.stop_reason == "tool_use"
    (block,) = message.content
    assert block.type == "tool_use"
    assert (block.id, block.name, block.input) == ("call_0", "get_weather", {"text": "weather in Oslo"})


async def test_anthropic_sdk_streamed_tool_use_through_a_gpt_model(live: Live) -> None:
    before = len(live.fake.requests)

    def run() -> tuple[list[str], Any]:
        with live.ant.messages.stream(
            model=GPT, max_tokens=100, tools=anthropic_tools(), tool_choice={"type": "any"},
            messages=[{"role": "user", "content": "use tool for Lima"}],
        ) as stream:  # fmt: skip
            partials = [e.partial_json for e in stream if e.type == "input_json"]
            return partials, stream.get_final_message()

    partials, final = await in_thread(run)

    body = live.only_request_since(before, "/v1/chat/completions")
    assert body["tool_choice"] == "required"
    assert len(partials) == 2  # the fake sends the arguments in two fragments
    assert final.stop_reason == "tool_use"
    (block,) = final.content
    assert (block.type, block.id, block.name) == ("tool_use", "call_0", "get_weather")
    assert block.input == {"text": "use tool for Lima"}
    assert final.usage.output_tokens == reply_to(body).output_tokens


async def test_tool_result_turn_from_the_openai_sdk_reaches_anthropic(live: Live) -> None:
    before = len(live.fake.requests)
    messages: Any = [
        {"role": "user", "content": "weather in Paris"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "toolu_0", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_0", "content": "sunny, 21 C"},
    ]  # fmt: skip
    completion = await in_thread(
        lambda: live.oai.chat.completions.create(model=CLAUDE, messages=messages, tools=openai_tools())
    )

    body = live.only_request_since(before, "/v1/messages")
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "weather in Paris"}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_0", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_0", "content": "sunny, 21 C"}]},
    ]  # fmt: skip
    assert completion.choices[0].message.content == "Echo: weather in Paris"
    assert completion.choices[0].finish_reason == "stop"


async def test_tool_result_turn_from_the_anthropic_sdk_reaches_openai(live: Live) -> None:
    before = len(live.fake.requests)
    messages: Any = [
        {"role": "user", "content": "weather in Oslo"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_0", "name": "get_weather", "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_0", "content": "snow"},
            {"type": "text", "text": "and tomorrow"}]},
    ]  # fmt: skip
    message = await in_thread(
        lambda: live.ant.messages.create(
            model=GPT, max_tokens=100, tools=anthropic_tools(), messages=messages
        )
    )

    body = live.only_request_since(before, "/v1/chat/completions")
    sent = body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user"]
    assert sent[1]["content"] is None
    (call,) = sent[1]["tool_calls"]
    assert (call["id"], call["type"], call["function"]["name"]) == ("call_0", "function", "get_weather")
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert sent[2] == {"role": "tool", "tool_call_id": "call_0", "content": "snow"}
    assert sent[3] == {"role": "user", "content": "and tomorrow"}
    assert message.content[0].text == "Echo: and tomorrow"  # type: ignore[union-attr]


async def test_responses_api_tool_call_and_follow_up_on_claude(live: Live) -> None:
    tools: Any = [{"type": "function", "name": "get_weather", "description": "The weather in a city",
                   "parameters": WEATHER_TOOL["schema"]}]  # fmt: skip
    before = len(live.fake.requests)
    first = await in_thread(
        lambda: live.oai.responses.create(
            model=CLAUDE, input="weather in Paris", tools=tools,
            tool_choice={"type": "function", "name": "get_weather"},
        )  # fmt: skip
    )
    body = live.only_request_since(before, "/v1/messages")
    assert body["tools"] == anthropic_tools()
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather"}
    (item,) = first.output
    assert item.type == "function_call"
    assert (item.call_id, item.name) == ("toolu_0", "get_weather")
    assert json.loads(item.arguments) == {"text": "weather in Paris"}

    before = len(live.fake.requests)
    follow_up: Any = [
        {"role": "user", "content": "weather in Paris"},
        {"type": "function_call", "call_id": item.call_id, "name": item.name,
         "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": item.call_id, "output": "sunny"},
    ]  # fmt: skip
    second = await in_thread(
        lambda: live.oai.responses.create(model=CLAUDE, input=follow_up, tools=tools,
                                          tool_choice="none")  # fmt: skip
    )
    body = live.only_request_since(before, "/v1/messages")
    assert body["messages"][1:] == [
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_0", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_0", "content": "sunny"}]},
    ]  # fmt: skip
    assert body["tool_choice"] == {"type": "none"}
    assert second.output_text == "Echo: weather in Paris"


async def test_responses_api_streamed_tool_call_on_gpt(live: Live) -> None:
    tools: Any = [{"type": "function", "name": "get_weather", "parameters": WEATHER_TOOL["schema"]}]

    def run() -> tuple[list[str], Any]:
        with live.oai.responses.stream(model=GPT, input="use tool for Rome", tools=tools) as stream:
            kinds = [e.type for e in stream]
            return kinds, stream.get_final_response()

    kinds, final = await in_thread(run)
    body = live.fake.requests[-1].json()
    assert body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "parameters": WEATHER_TOOL["schema"]}}]  # fmt: skip
    assert kinds.count("response.function_call_arguments.delta") == 2
    assert kinds[-1] == "response.completed"
    (item,) = final.output
    assert (item.type, item.call_id, item.name) == ("function_call", "call_0", "get_weather")
    assert json.loads(item.arguments) == {"text": "use tool for Rome"}


async def test_images_and_user_ids_cross_both_ways(live: Live) -> None:
    data = "iVBORw0KGgo="
    messages: Any = [{"role": "user", "content": [
        {"type": "text", "text": "see this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]  # fmt: skip
    completion = await in_thread(
        lambda: live.oai.chat.completions.create(model=CLAUDE, messages=messages, user="u-1")
    )
    body = live.fake.requests[-1].json()
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "see this"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
    ]
    assert body["metadata"] == {"user_id": "u-1"}
    assert completion.choices[0].message.content == "Echo: see this"

    message = await in_thread(
        lambda: live.ant.messages.create(
            model=GPT, max_tokens=20, metadata={"user_id": "u-2"},
            messages=[{"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": data}}]}],
        )  # fmt: skip
    )
    body = live.fake.requests[-1].json()
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
    ]
    assert body["user"] == "u-2"
    assert message.content[0].text == "Echo: look"  # type: ignore[union-attr]


# ---- failures, retries, fallback across providers ----------------------------------------


async def test_fallback_from_anthropic_to_openai_bills_the_deployment_that_answered(
    live: Live,
) -> None:
    live.fake.script(Fault(status=529))  # Anthropic overloaded: straight to OpenAI
    before = len(live.fake.requests)
    messages: Any = [{"role": "user", "content": "hello you"}]
    completion = await in_thread(
        lambda: live.oai.chat.completions.create(model=CLAUDE, messages=messages)
    )

    sent = live.sent_since(before)
    assert [r.path for r in sent] == ["/v1/messages", "/v1/chat/completions"]
    assert completion.choices[0].message.content == "Echo: hello you"
    gateway = extra(completion, "gateway")
    assert [(a["provider"], a["outcome"]) for a in gateway["attempts"]] == [
        ("anthropic", "overloaded"), ("openai", "ok")
    ]
    answered = gateway["model"]
    assert answered in CATALOG["models"][CLAUDE]["fallbacks"]
    assert sent[1].json()["model"] == upstream_model(live.gw, answered)
    reply = reply_to(sent[1].json())
    want = expected_cost(answered, uncached=reply.input_tokens, cached=0, output=reply.output_tokens)
    assert Decimal(gateway["cost_usd"]) == want
    row = await ledger_row(live.gw, gateway["request_id"])
    assert (row.cost, row.provider, row.price_version, row.attempts) == (
        want, "openai", price_of(answered)["version"], 2
    )


async def test_exhausted_rate_limits_reach_the_openai_sdk_as_a_429(live: Live) -> None:
    live.fake.script(*[Fault(status=429, headers={"retry-after": "0"})] * 4)
    messages: Any = [{"role": "user", "content": "hello"}]
    with pytest.raises(openai.RateLimitError) as caught:
        await in_thread(lambda: live.oai.chat.completions.create(model=CLAUDE, messages=messages))
    # max_attempts (4) across the model and its cheapest fallback, each tried twice
    assert [r.path for r in live.fake.requests] == ["/v1/messages"] * 2 + ["/v1/chat/completions"] * 2
    assert caught.value.status_code == 429
    assert caught.value.body["code"] == "upstream_rate_limited"  # type: ignore[index]
    assert int(caught.value.response.headers["retry-after"]) >= 1


async def test_upstream_auth_failure_is_a_502_that_blames_the_gateway(live: Live) -> None:
    live.fake.script(Fault(status=401, message="invalid x-api-key {api_key}"))
    with pytest.raises(anthropic.InternalServerError) as caught:
        await in_thread(
            lambda: live.ant.messages.create(
                model=GPT, max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
        )
    assert len(live.fake.requests) == 1  # not retried, no fallback
    assert caught.value.status_code == 502
    text = json.dumps(caught.value.body)
    assert "credentials" in text and "x-api-key" not in text
    assert leaked(text) == []


async def test_a_failure_after_the_first_chunk_is_an_error_in_each_sdk(live: Live) -> None:
    messages: Any = [{"role": "user", "content": "one two three four"}]
    live.fake.script(Fault(error_event_after=3))  # OpenAI fake: role chunk + 2 words, then error
    seen: list[str] = []

    def anthropic_side() -> None:
        with live.ant.messages.stream(model=GPT, max_tokens=50, messages=messages) as stream:
            for event in stream:
                if event.type == "text":
                    seen.append(event.text)

    with pytest.raises(anthropic.APIStatusError) as a_err:
        await in_thread(anthropic_side)
    assert "".join(seen) == "Echo: one"
    assert a_err.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert "incomplete" in str(a_err.value)

    # Anthropic fake: message_start, block start, ping, "Echo:", " one", then an error
    live.fake.script(Fault(error_event_after=5))
    pieces: list[str] = []

    def openai_side() -> None:
        for chunk in live.oai.chat.completions.create(model=CLAUDE, messages=messages, stream=True):
            pieces.extend(c.delta.content or "" for c in chunk.choices)

    with pytest.raises(openai.APIError, match="incomplete"):
        await in_thread(openai_side)
    assert "".join(pieces) == "Echo: one"
    assert len(live.fake.requests) == 2  # no retry once the client had content


# ---- sampling, stop sequences, length ----------------------------------------------------


async def test_openai_sdk_limits_reach_anthropic_and_length_maps_back(live: Live) -> None:
    before = len(live.fake.requests)
    messages: Any = [{"role": "user", "content": "a b c d e f"}]
    completion = await in_thread(
        lambda: live.oai.chat.completions.create(
            model=CLAUDE, messages=messages, stop=["END", "STOP"], temperature=1.6, top_p=0.9,
            max_completion_tokens=3,
        )  # fmt: skip
    )

    body = live.only_request_since(before, "/v1/messages")
    assert body["stop_sequences"] == ["END", "STOP"]
    assert body["temperature"] == 1.0  # OpenAI's 0-2 range clamped to Anthropic's 0-1
    assert body["top_p"] == 0.9
    assert body["max_tokens"] == 3
    assert completion.choices[0].message.content == "Echo: a b"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3


async def test_anthropic_sdk_limits_reach_openai_and_length_maps_back(live: Live) -> None:
    before = len(live.fake.requests)
    message = await in_thread(
        lambda: live.ant.messages.create(
            model=GPT, max_tokens=2, stop_sequences=["END"],
            messages=[{"role": "user", "content": "one two three"}],
            # this SDK release has no `temperature` argument; the wire field still exists
            extra_body={"temperature": 0.25},
        )  # fmt: skip
    )

    body = live.only_request_since(before, "/v1/chat/completions")
    assert body["stop"] == ["END"]
    assert body["temperature"] == 0.25
    assert body["max_completion_tokens"] == 2
    assert message.content[0].text == "Echo: one"  # type: ignore[union-attr]
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 2


async def test_streamed_length_maps_both_ways(live: Live) -> None:
    messages: Any = [{"role": "user", "content": "w x y z"}]

    def openai_side() -> list[Any]:
        return list(live.oai.chat.completions.create(
            model=CLAUDE, messages=messages, max_tokens=2, stream=True))  # fmt: skip

    def anthropic_side() -> Any:
        with live.ant.messages.stream(model=GPT, max_tokens=3, messages=messages) as stream:
            return stream.get_final_message()

    chunks = await in_thread(openai_side)
    assert [r.path for r in live.fake.requests] == ["/v1/messages"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: w"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"

    final = await in_thread(anthropic_side)
    assert live.fake.requests[-1].json()["max_completion_tokens"] == 3
    assert final.content[0].text == "Echo: w x"
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 3


async def test_responses_max_output_tokens_on_claude_makes_an_incomplete_response(
    live: Live,
) -> None:
    before = len(live.fake.requests)
    response = await in_thread(
        lambda: live.oai.responses.create(
            model=CLAUDE, input="p q r s t", max_output_tokens=2, temperature=0.5
        )
    )
    body = live.only_request_since(before, "/v1/messages")
    assert (body["max_tokens"], body["temperature"]) == (2, 0.5)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "Echo: p"
    assert response.usage is not None and response.usage.output_tokens == 2


# ---- secrets -----------------------------------------------------------------------------

KEYS = tuple(PROVIDER_KEYS.values())


def leaked(text: str) -> list[str]:
    """Provider keys, or 8+ character pieces of them, found in `text`."""
    found = []
    for key in KEYS:
        pieces = {key[i : i + 8] for i in range(len(key) - 7)}
        if any(p in text for p in pieces):
            found.append(key)
    return found


async def test_provider_keys_never_reach_clients_or_logs(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    echo_key = "upstream says: your key {api_key} is not allowed here"
    texts: list[str] = []

    # openai SDK -> claude: the Anthropic adapter's 400 carries the Anthropic key
    live.fake.script(Fault(status=400, message=echo_key))
    messages: Any = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as bad_openai:
        await in_thread(lambda: live.oai.chat.completions.create(model=CLAUDE, messages=messages))
    texts.append(str(bad_openai.value))
    texts.append(json.dumps(bad_openai.value.body))

    # anthropic SDK -> gpt: the OpenAI adapter's 400 carries the OpenAI key
    live.fake.script(Fault(status=400, message=echo_key))
    with pytest.raises(anthropic.BadRequestError) as bad_anthropic:
        await in_thread(
            lambda: live.ant.messages.create(model=GPT, max_tokens=10, messages=messages)
        )
    texts.append(str(bad_anthropic.value))
    texts.append(json.dumps(bad_anthropic.value.body))

    # a stream whose first try fails with a retryable 500 echoing the key, then works
    live.fake.script(Fault(status=500, message=echo_key))
    before = len(live.fake.requests)

    def streamed() -> tuple[str, str]:
        retry: Any = [{"role": "user", "content": "after a retry"}]
        chunks = list(live.oai.chat.completions.create(model=GPT, messages=retry, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, "".join(c.model_dump_json() for c in chunks)

    answer, dump = await in_thread(streamed)
    assert answer == "Echo: after a retry"
    assert len(live.fake.requests) - before == 2  # the failed try and the retry
    texts.append(dump)

    # the keys really went upstream, and the fake really echoed them
    sent_keys = {r.headers.get("x-api-key") or r.headers.get("authorization", "")[7:]
                 for r in live.fake.requests}  # fmt: skip
    assert set(KEYS) <= sent_keys
    assert "[redacted]" in texts[0] and "[redacted]" in texts[2]
    assert "is not allowed here" in texts[0] and "is not allowed here" in texts[2]
    assert bad_openai.value.status_code == 400 and bad_anthropic.value.status_code == 400

    formatter = JsonFormatter()
    log_text = "\n".join(
        [r.getMessage() for r in caplog.records] + [formatter.format(r) for r in caplog.records]
    )
    assert caplog.records, "expected the gateway and its HTTP clients to log something"
    for text in [*texts, log_text]:
        assert leaked(text) == [], text


# ---- docs/providers.md ---------------------------------------------------------------------


def docs_toml() -> str:
    text = (ROOT / "docs" / "providers.md").read_text()
    blocks = re.findall(r"^```toml\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    assert len(blocks) == 1, "docs/providers.md should hold exactly one ```toml example"
    return str(blocks[0])


def test_the_documented_config_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "umg.toml"
    path.write_text(docs_toml())
    env = {"UMG_CONFIG": str(path), "OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a",
           "GROQ_API_KEY": "gsk-g"}  # fmt: skip
    settings = load_settings(env)

    assert not settings.mock_mode
    by_name = {p.name: p for p in settings.providers}
    assert set(by_name) == {"openai", "anthropic", "groq", "ollama"}
    assert by_name["groq"].api_key == "gsk-g" and by_name["ollama"].api_key is None
    assert by_name["groq"].kind == by_name["ollama"].kind == "openai_compatible"
    assert settings.attempts.max_attempts == 3
    assert settings.timeouts.first_byte == 30.0
    assert settings.health.cooldown == 15.0

    catalog = serving_catalog(settings)
    assert "claude-sonnet-4" in catalog.models and "gpt-4.1" in catalog.models
    (paid,) = catalog.resolve("groq/llama-3.1-8b-instant").deployments
    assert (paid.provider, str(paid.price.input), str(paid.price.output)) == ("groq", "0.05", "0.08")
    assert catalog.resolve("llama").id == "groq/llama-3.1-8b-instant"
    assert paid.price.version == "groq-2026-01"
    (local,) = catalog.resolve("ollama/qwen2.5:7b").deployments
    assert local.price.input == local.price.output == 0
