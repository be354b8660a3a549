"""The Mock's tool calls and scenario controls through the real gateway (mock mode).

Clients are the official `openai` and `anthropic` SDKs (sync, in worker threads, so the
gateway keeps serving on the trio loop) and plain httpx. Expected tool calls follow the
Mock's documented tool-call rule (adapters/providers/mock.py): one call, id
`call_mock_0`, to the named (or first) tool, arguments `{"text": <last user message>}`
(the tools here declare no properties; a declared schema gets its minimal instance, see
tests/clients); output tokens are the words of that JSON. Scenarios come from `metadata.mock_scenario`
or the `x-umg-mock-scenario` header.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import openai
import pytest
import trio

from adapters.storage.records import UsageRecord
from tests.fakes import running_fake_provider
from tests.server.conftest import Running
from tests.server.live import live_gateway

T = TypeVar("T")

HEADER = "x-umg-mock-scenario"
CALL_ID = "call_mock_0"
CLAUDE = "claude-sonnet-4-20250514"
SCHEMA = {"type": "object"}  # no declared properties: the Mock echoes the prompt as "text"
CHAT_TOOLS: Any = [
    {"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}},
    {"type": "function", "function": {"name": "get_time", "parameters": SCHEMA}},
]
ANTHROPIC_TOOLS: Any = [
    {"name": "get_weather", "description": "weather in a city", "input_schema": SCHEMA},
    {"name": "get_time", "description": "time in a city", "input_schema": SCHEMA},
]
RESPONSES_TOOLS: Any = [
    {"type": "function", "name": "get_weather", "parameters": SCHEMA, "strict": False},
    {"type": "function", "name": "get_time", "parameters": SCHEMA, "strict": False},
]


def arguments(text: str) -> str:
    return json.dumps({"text": text})


async def with_openai(gateway: Running, fn: Callable[[openai.OpenAI], T]) -> T:
    def run() -> T:
        with openai.OpenAI(
            base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0, timeout=20
        ) as client:
            return fn(client)

    return await trio.to_thread.run_sync(run)


async def with_anthropic(gateway: Running, fn: Callable[[anthropic.Anthropic], T]) -> T:
    def run() -> T:
        with anthropic.Anthropic(
            base_url=gateway.url, api_key=gateway.key, max_retries=0, timeout=20
        ) as client:
            return fn(client)

    return await trio.to_thread.run_sync(run)


async def ledger(gateway: Running) -> list[UsageRecord]:
    now = datetime.now(UTC)
    return await gateway.services.storage.usage_rows(
        "t1", now - timedelta(days=1), now + timedelta(days=1)
    )


# ---- tool calls ----------------------------------------------------------------------------


async def test_chat_tool_call_whole(gateway: Running) -> None:
    prompt = "please use tool for Paris"

    def call(client: openai.OpenAI) -> Any:
        return client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": prompt}], tools=CHAT_TOOLS
        )

    r = await with_openai(gateway, call)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    tc = choice.message.tool_calls[0]
    assert (tc.id, tc.type, tc.function.name) == (CALL_ID, "function", "get_weather")
    assert tc.function.arguments == arguments(prompt)
    assert json.loads(tc.function.arguments) == {"text": prompt}
    assert r.usage is not None
    assert r.usage.completion_tokens == len(arguments(prompt).split()) == 6
    row = (await ledger(gateway))[-1]
    assert (row.status, row.output_tokens) == ("ok", 6)


async def test_chat_tool_choice_none_never_calls(gateway: Running) -> None:
    def call(client: openai.OpenAI) -> Any:
        return client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "use tool please"}],
            tools=CHAT_TOOLS,
            tool_choice="none",
        )

    r = await with_openai(gateway, call)
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].message.content == "Mock answer from gpt-4.1: use tool please"


async def test_chat_tool_call_streamed_with_named_tool(gateway: Running) -> None:
    prompt = "what time is it in Lima"

    def call(client: openai.OpenAI) -> list[Any]:
        stream = client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": prompt}],
            tools=CHAT_TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_time"}},
            stream=True,
            stream_options={"include_usage": True},
        )
        with stream:
            return list(stream)

    chunks = await with_openai(gateway, call)
    pieces = [
        tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or ())
    ]
    assert len(pieces) == 3  # the start piece, then the arguments in two fragments
    assert (pieces[0].index, pieces[0].id) == (0, CALL_ID)
    assert pieces[0].function is not None and pieces[0].function.name == "get_time"
    fragments = [p.function.arguments for p in pieces[1:] if p.function is not None]
    assert len(fragments) == 2 and all(fragments)
    assert "".join(fragments) == arguments(prompt)
    assert not any(c.choices[0].delta.content for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == len(arguments(prompt).split())


async def test_messages_tool_use_block_whole_and_streamed(gateway: Running) -> None:
    prompt = "use tool to check the weather"

    def whole(client: anthropic.Anthropic) -> Any:
        return client.messages.create(
            model=CLAUDE, max_tokens=200, tools=ANTHROPIC_TOOLS,
            messages=[{"role": "user", "content": prompt}],
        )

    def streamed(client: anthropic.Anthropic) -> tuple[Any, list[str]]:
        with client.messages.stream(
            model=CLAUDE, max_tokens=200, tools=ANTHROPIC_TOOLS,
            tool_choice={"type": "tool", "name": "get_time"},
            messages=[{"role": "user", "content": prompt}],
        ) as stream:
            partial = [
                e.delta.partial_json
                for e in stream
                if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
            ]
            return stream.get_final_message(), partial

    m = await with_anthropic(gateway, whole)
    assert m.stop_reason == "tool_use"
    assert [b.type for b in m.content] == ["tool_use"]
    block = m.content[0]
    assert (block.id, block.name, block.input) == (CALL_ID, "get_weather", {"text": prompt})
    assert m.usage.output_tokens == len(arguments(prompt).split())

    final, partial = await with_anthropic(gateway, streamed)
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["tool_use"]
    block = final.content[0]
    assert (block.id, block.name, block.input) == (CALL_ID, "get_time", {"text": prompt})
    assert len(partial) == 2 and "".join(partial) == arguments(prompt)
    assert final.usage.output_tokens == len(arguments(prompt).split())


async def test_messages_tool_result_turn_answers_text_unless_a_call_is_required(
    gateway: Running,
) -> None:
    turns: Any = [
        {"role": "user", "content": "use tool"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": CALL_ID, "name": "get_weather", "input": {"city": "x"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": CALL_ID, "content": "sunny"},
        ]},
    ]

    def call(choice: Any) -> Callable[[anthropic.Anthropic], Any]:
        return lambda client: client.messages.create(
            model=CLAUDE, max_tokens=200, tools=ANTHROPIC_TOOLS, messages=turns,
            **({"tool_choice": choice} if choice else {}),
        )

    m = await with_anthropic(gateway, call(None))
    assert m.stop_reason == "end_turn"
    assert [b.type for b in m.content] == ["text"]
    # "any" (required): the first tool not called yet in the conversation
    m = await with_anthropic(gateway, call({"type": "any"}))
    assert m.stop_reason == "tool_use"
    assert [(b.type, b.name) for b in m.content] == [("tool_use", "get_time")]


async def test_responses_function_call_item(gateway: Running) -> None:
    prompt = "weather for Oslo"

    def whole(client: openai.OpenAI) -> Any:
        return client.responses.create(
            model="gpt-4.1", input=prompt, tools=RESPONSES_TOOLS, tool_choice="required"
        )

    def streamed(client: openai.OpenAI) -> tuple[list[str], Any]:
        stream = client.responses.create(
            model="gpt-4.1", input=prompt, tools=RESPONSES_TOOLS,
            tool_choice={"type": "function", "name": "get_time"}, stream=True,
        )
        with stream:
            events = list(stream)
        deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
        completed = [e.response for e in events if e.type == "response.completed"]
        assert len(completed) == 1
        return deltas, completed[0]

    r = await with_openai(gateway, whole)
    assert r.status == "completed"
    assert [item.type for item in r.output] == ["function_call"]
    item = r.output[0]
    assert (item.call_id, item.name, item.arguments) == (CALL_ID, "get_weather", arguments(prompt))
    assert r.usage is not None and r.usage.output_tokens == len(arguments(prompt).split())

    deltas, final = await with_openai(gateway, streamed)
    assert len(deltas) == 2 and "".join(deltas) == arguments(prompt)
    assert [item.type for item in final.output] == ["function_call"]
    assert (final.output[0].call_id, final.output[0].name) == (CALL_ID, "get_time")
    assert final.output[0].arguments == arguments(prompt)


# ---- the scenario header ---------------------------------------------------------------------


async def test_header_cut_after_on_messages_stream_is_an_explicit_error_event(
    gateway: Running,
) -> None:
    seen: list[str] = []

    def call(client: anthropic.Anthropic) -> None:
        with client.messages.stream(
            model=CLAUDE, max_tokens=200,
            messages=[{"role": "user", "content": "one two three four"}],
            extra_headers={HEADER: "cut_after=2"},
        ) as stream:
            for text in stream.text_stream:
                seen.append(text)

    with pytest.raises(anthropic.APIStatusError) as caught:
        await with_anthropic(gateway, call)
    assert seen == ["Mock", " answer"]  # what was sent before the cut, then no fallback
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "api_error"

    # on the wire: an `event: error` frame and no message_stop
    async with gateway.client() as client:
        r = await client.post(
            "/v1/messages",
            headers={HEADER: "cut_after=2"},
            json={"model": CLAUDE, "max_tokens": 50, "stream": True,
                  "messages": [{"role": "user", "content": "one two three"}]},
        )
    assert r.status_code == 200
    assert "event: error" in r.text and "event: message_stop" not in r.text


async def test_header_fail_then_recover_through_the_anthropic_sdk(gateway: Running) -> None:
    def call(client: anthropic.Anthropic) -> Any:
        return client.messages.with_raw_response.create(
            model=CLAUDE, max_tokens=200, tools=ANTHROPIC_TOOLS,
            messages=[{"role": "user", "content": "use tool now"}],
            extra_headers={HEADER: "fail=429;retry_after=1;fail_times=1"},
        )

    raw = await with_anthropic(gateway, call)
    m = raw.parse()
    assert m.stop_reason == "tool_use" and m.content[0].input == {"text": "use tool now"}
    attempts = (m.model_extra or {})["gateway"]["attempts"]
    assert len(attempts) == 2
    assert attempts[0]["outcome"] != "ok" and attempts[-1]["outcome"] == "ok"


async def test_header_fail_429_every_time_is_a_rate_limit_error(gateway: Running) -> None:
    def call(client: anthropic.Anthropic) -> Any:
        return client.messages.create(
            model=CLAUDE, max_tokens=200,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={HEADER: "fail=429;retry_after=1"},
        )

    with pytest.raises(anthropic.RateLimitError) as caught:
        await with_anthropic(gateway, call)
    assert caught.value.response.headers["retry-after"] == "1"


async def test_body_metadata_wins_over_the_header(gateway: Running) -> None:
    async with gateway.client() as client:
        r = await client.post(
            "/v1/chat/completions",
            headers={HEADER: "output_tokens=5"},
            json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}],
                  "metadata": {"mock_scenario": "output_tokens=3"}},
        )
        only_header = await client.post(
            "/v1/chat/completions",
            headers={HEADER: "output_tokens=5"},
            json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    assert only_header.status_code == 200
    assert only_header.json()["usage"]["completion_tokens"] == 5


# ---- bad scenarios: 400 naming the field, on every surface, streamed or not ------------------

SURFACES = [
    ("/v1/chat/completions", {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/messages", {"model": CLAUDE, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/responses", {"model": "gpt-4.1", "input": "hi"}),
    ("/v1/responses/stream", {"model": "gpt-4.1", "input": "hi"}),
]
BAD = ["latency_ms=abc", "latency_ms=-1", "chunk_delay_ms=60001", "fail=418", "latncy_ms=5"]


CASES = [
    (path, body, stream)
    for path, body in SURFACES
    for stream in ([True] if path.endswith("/stream") else [False, True])  # /stream always streams
]


@pytest.mark.parametrize(("path", "body", "stream"), CASES)
@pytest.mark.parametrize("scenario", BAD)
async def test_bad_header_scenario_is_400_naming_the_field(
    gateway: Running, path: str, body: dict[str, Any], stream: bool, scenario: str
) -> None:
    sent = {**body, "stream": True} if stream and not path.endswith("/stream") else body
    async with gateway.client() as client:
        r = await client.post(path, headers={HEADER: scenario}, json=sent)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert "metadata.mock_scenario" in error["message"]
    assert HEADER in error["message"]
    if path == "/v1/messages":
        assert r.json()["type"] == "error" and error["type"] == "invalid_request_error"
    else:
        assert error["param"] == "metadata.mock_scenario"
        assert error["type"] == "invalid_request_error"
    rows = await ledger(gateway)
    assert rows[-1].status == "error" and rows[-1].error_code == "invalid_request"
    assert rows[-1].output_tokens == 0


async def test_bad_body_scenario_is_400_through_the_openai_sdk(gateway: Running) -> None:
    def chat(client: openai.OpenAI) -> Any:
        return client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "hi"}],
            metadata={"mock_scenario": "latency_ms=9999999"}, stream=True,
        )

    def responses(client: openai.OpenAI) -> Any:
        return client.responses.create(
            model="gpt-4.1", input="hi", extra_headers={HEADER: "retry_after=soon"}
        )

    for fn, named in ((chat, "latency_ms"), (responses, "retry_after")):
        with pytest.raises(openai.BadRequestError) as caught:
            await with_openai(gateway, fn)
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["param"] == "metadata.mock_scenario"
        assert named in caught.value.body["message"]


async def test_bad_header_scenario_is_400_through_the_anthropic_sdk(gateway: Running) -> None:
    def call(client: anthropic.Anthropic) -> None:
        with client.messages.stream(
            model=CLAUDE, max_tokens=20, messages=[{"role": "user", "content": "hi"}],
            extra_headers={HEADER: "cut_after=x"},
        ) as stream:
            stream.until_done()

    with pytest.raises(anthropic.BadRequestError) as caught:
        await with_anthropic(gateway, call)
    body = caught.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "invalid_request_error"
    assert "metadata.mock_scenario" in body["error"]["message"]
    assert "cut_after" in body["error"]["message"]


# ---- live mode: the header never reaches a real provider ------------------------------------


async def test_header_is_ignored_by_real_providers_and_never_forwarded(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with running_fake_provider() as fake:
        gw = await live_gateway(nursery, tmp_path, fake)
        try:
            async with gw.client() as client:
                real = await client.post(
                    "/v1/chat/completions",
                    headers={HEADER: "latency_ms=abc"},  # malformed, but no Mock serves it
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                )
                mocked = await client.post(
                    "/v1/chat/completions",
                    headers={HEADER: "latency_ms=abc"},  # the mock-* models are Mock-served
                    json={"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}]},
                )
            assert real.status_code == 200, real.text
            assert [r.path for r in fake.requests] == ["/v1/chat/completions"]
            sent = fake.requests[0]
            assert HEADER not in sent.headers
            assert "metadata" not in sent.json()
            assert "mock_scenario" not in sent.body.decode()
            assert mocked.status_code == 400
            assert mocked.json()["error"]["param"] == "metadata.mock_scenario"
        finally:
            gw.stop.set()


async def test_header_on_anthropic_provider_body_is_not_forwarded(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with running_fake_provider() as fake:
        gw = await live_gateway(nursery, tmp_path, fake)
        try:
            async with gw.client() as client:
                r = await client.post(
                    "/v1/messages",
                    headers={HEADER: "fail=500"},
                    json={"model": "claude-3.5-haiku", "max_tokens": 20,
                          "metadata": {"user_id": "u-7"},
                          "messages": [{"role": "user", "content": "hi"}]},
                )
            assert r.status_code == 200, r.text
            assert [q.path for q in fake.requests] == ["/v1/messages"]
            assert HEADER not in fake.requests[0].headers
            assert fake.requests[0].json()["metadata"] == {"user_id": "u-7"}
        finally:
            gw.stop.set()
