"""The official `openai` SDK against the real gateway (mock mode) on port 0.

The SDK is synchronous here and runs in a worker thread (`trio.to_thread.run_sync`), so
the gateway keeps serving on the trio loop of the test. Expected texts and token counts
follow the Mock's documented rules (adapters/providers/mock.py): the answer is
"Mock answer from <upstream>: " + the last user message's words; input tokens are one per
word plus 4 per message; output tokens one per answer word.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import openai
import pytest
import trio
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema

from adapters.storage.records import UsageRecord
from tests.server.conftest import Running

T = TypeVar("T")

WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def mock_answer(upstream: str, user_text: str) -> str:
    return " ".join(["Mock", "answer", "from", f"{upstream}:", *user_text.split()])


def input_tokens(*texts: str) -> int:
    return sum(len(t.split()) + 4 for t in texts)


async def in_thread(
    gateway: Running, fn: Callable[[openai.OpenAI], T], key: str | None = None
) -> T:
    def run() -> T:
        with openai.OpenAI(
            base_url=gateway.url + "/v1", api_key=key or gateway.key, max_retries=0, timeout=20
        ) as client:
            return fn(client)

    return await trio.to_thread.run_sync(run)


async def ledger_row(gateway: Running, request_id: str) -> UsageRecord:
    now = datetime.now(UTC)
    rows = await gateway.services.storage.usage_rows(
        "t1", now - timedelta(days=1), now + timedelta(days=1)
    )
    [row] = [r for r in rows if r.request_id == request_id]
    return row


# -- chat.completions ---------------------------------------------------------------------


async def test_chat_completion_content_usage_finish_reason_and_ledger(gateway: Running) -> None:
    system, prompt = "You are terse", "Hello there my friend"

    def call(client: openai.OpenAI) -> Any:
        return client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
        )

    r = await in_thread(gateway, call)
    expected = mock_answer("gpt-4.1", prompt)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == "gpt-4.1"
    [choice] = r.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == expected
    assert choice.finish_reason == "stop"
    assert r.usage is not None
    assert r.usage.prompt_tokens == input_tokens(system, prompt)
    assert r.usage.completion_tokens == len(expected.split())
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    info = (r.model_extra or {})["gateway"]
    assert info["provider"] == "openai"
    row = await ledger_row(gateway, info["request_id"])
    assert row.endpoint == "chat.completions"
    assert row.status == "ok"
    assert (row.input_tokens, row.output_tokens) == (
        r.usage.prompt_tokens,
        r.usage.completion_tokens,
    )
    assert row.cost > 0
    assert Decimal(info["cost_usd"]) == row.cost


async def test_chat_max_tokens_cuts_with_finish_reason_length(gateway: Running) -> None:
    def call(client: openai.OpenAI) -> Any:
        return client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "a b c d e f"}], max_tokens=3
        )

    r = await in_thread(gateway, call)
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == "Mock answer from"
    assert r.usage.completion_tokens == 3


async def test_chat_stream_with_usage_matches_the_whole_answer(gateway: Running) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Stream me the same words please"}
    ]

    def call(client: openai.OpenAI) -> tuple[Any, list[Any]]:
        whole = client.chat.completions.create(model="gpt-4.1", messages=messages)
        stream = client.chat.completions.create(
            model="gpt-4.1",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        with stream:
            return whole, list(stream)

    whole, chunks = await in_thread(gateway, call)
    assert len({c.id for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4.1" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [c for c in chunks if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text == whole.choices[0].message.content
    # One word per chunk (the Mock's streaming rule) between the role chunk and the end.
    assert len(with_choices) == 1 + len(text.split()) + 1
    finishes = [c.choices[0].finish_reason for c in with_choices]
    assert finishes[:-1] == [None] * (len(finishes) - 1)
    assert finishes[-1] == "stop"
    # The usage chunk comes last, with no choices; every earlier chunk has usage null.
    last = chunks[-1]
    assert last.choices == []
    assert all(c.usage is None for c in chunks[:-1])
    assert last.usage is not None
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens
    assert last.usage.completion_tokens == whole.usage.completion_tokens
    assert (last.model_extra or {})["gateway"]["cost_usd"] == (whole.model_extra or {})["gateway"][
        "cost_usd"
    ]


async def test_chat_stream_without_include_usage_has_no_usage_chunk(gateway: Running) -> None:
    def call(client: openai.OpenAI) -> list[Any]:
        stream = client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "no usage"}], stream=True
        )
        with stream:
            return list(stream)

    chunks = await in_thread(gateway, call)
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_chat_stream_cut_mid_answer_raises_api_error(gateway: Running) -> None:
    seen: list[str] = []

    def call(client: openai.OpenAI) -> None:
        stream = client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "one two three four"}],
            stream=True,
            metadata={"mock_scenario": "cut_after=2"},
        )
        with stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    seen.append(chunk.choices[0].delta.content)

    with pytest.raises(openai.APIError) as caught:
        await in_thread(gateway, call)
    # Exactly the two words sent before the cut reached the client; no silent fallback.
    assert seen == ["Mock", " answer"]
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "upstream_error"


async def test_chat_tools_are_accepted_and_tool_results_round_trip(gateway: Running) -> None:
    # After a tool result the Mock answers with text under "auto" (tool calls coming back are covered
    # in test_e2e_mock.py); this checks that tools, tool_choice and a tool-result
    # conversation are accepted and answered.
    question = "What is the weather in Paris"

    def call(client: openai.OpenAI) -> tuple[Any, Any]:
        first = client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": question}],
            tools=[WEATHER_TOOL],
            tool_choice="auto",
            parallel_tool_calls=False,
        )
        second = client.chat.completions.create(
            model="gpt-4.1",
            messages=[
                {"role": "user", "content": question},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny 21C"},
            ],
            tools=[WEATHER_TOOL],
            tool_choice="auto",  # a named tool would be called again (the Mock's rule)
        )
        return first, second

    first, second = await in_thread(gateway, call)
    for r in (first, second):
        assert r.choices[0].message.content == mock_answer("gpt-4.1", question)
        assert r.choices[0].message.tool_calls is None
        assert r.choices[0].finish_reason == "stop"
    assert second.usage.prompt_tokens == input_tokens(question, "", "sunny 21C")


async def test_chat_tool_choice_naming_an_unknown_tool_is_bad_request(gateway: Running) -> None:
    def call(client: openai.OpenAI) -> Any:
        return client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "hi"}],
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )

    with pytest.raises(openai.BadRequestError) as caught:
        await in_thread(gateway, call)
    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "invalid_request_error"
    assert caught.value.body["param"] == "tool_choice.function.name"


async def test_chat_response_format_is_accepted(gateway: Running) -> None:
    schema: ResponseFormatJSONSchema = {
        "type": "json_schema",
        "json_schema": {
            "name": "city",
            "schema": {
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    }

    def call(client: openai.OpenAI) -> tuple[Any, Any]:
        a = client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "name a city"}],
            response_format=schema,
        )
        b = client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "json please"}],
            response_format={"type": "json_object"},
        )
        return a, b

    a, b = await in_thread(gateway, call)
    # the Mock answers the minimal JSON valid against the schema (and {} for json_object)
    assert a.choices[0].message.content == '{"name": ""}'
    assert b.choices[0].message.content == "{}"


# -- errors --------------------------------------------------------------------------------


async def test_unknown_model_is_not_found_error_with_openai_shape(gateway: Running) -> None:
    def call(client: openai.OpenAI) -> Any:
        return client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )

    with pytest.raises(openai.NotFoundError) as caught:
        await in_thread(gateway, call)
    err = caught.value
    assert err.status_code == 404
    assert isinstance(err.body, dict)
    assert set(err.body) == {"message", "type", "param", "code", "request_id"}
    assert err.body["code"] == "model_not_found"
    assert err.body["param"] == "model"
    assert "no-such-model" in err.body["message"]


async def test_bad_key_is_authentication_error_with_openai_shape(gateway: Running) -> None:
    key = await gateway.new_key()
    wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")

    def call(client: openai.OpenAI) -> Any:
        return client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "hi"}]
        )

    with pytest.raises(openai.AuthenticationError) as caught:
        await in_thread(gateway, call, key=wrong)
    err = caught.value
    assert err.status_code == 401
    assert isinstance(err.body, dict)
    assert set(err.body) == {"message", "type", "param", "code", "request_id"}
    assert err.body["type"] == "authentication_error"
    assert err.body["request_id"] == err.response.headers["x-request-id"]
    assert await gateway.services.storage.usage_count() == 0


async def test_unknown_parameter_is_bad_request_naming_it(gateway: Running) -> None:
    def call(client: openai.OpenAI) -> Any:
        return client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"max_token": 5},
        )

    with pytest.raises(openai.BadRequestError) as caught:
        await in_thread(gateway, call)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["param"] == "max_token"


async def test_upstream_rate_limit_is_rate_limit_error_with_retry_after(gateway: Running) -> None:
    def call(client: openai.OpenAI) -> Any:
        return client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "hi"}],
            metadata={"mock_scenario": "fail=429;retry_after=1"},
        )

    with pytest.raises(openai.RateLimitError) as caught:
        await in_thread(gateway, call)
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "1"
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "rate_limit_error"


# -- responses -------------------------------------------------------------------------------


async def test_responses_create(gateway: Running) -> None:
    prompt = "Hello responses surface"

    def call(client: openai.OpenAI) -> Any:
        return client.responses.create(model="gpt-4.1", input=prompt, instructions="Answer briefly")

    r = await in_thread(gateway, call)
    assert r.id.startswith("resp_")
    assert r.object == "response"
    assert r.status == "completed"
    assert r.output_text == mock_answer("gpt-4.1", prompt)
    assert r.usage is not None
    assert r.usage.input_tokens == input_tokens("Answer briefly", prompt)
    assert r.usage.output_tokens == len(r.output_text.split())
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    row = await ledger_row(gateway, (r.model_extra or {})["gateway"]["request_id"])
    assert row.endpoint == "responses"
    assert row.output_tokens == r.usage.output_tokens


async def test_responses_create_accepts_tools_and_text_format(gateway: Running) -> None:
    def call(client: openai.OpenAI) -> Any:
        return client.responses.create(
            model="gpt-4.1",
            input=[{"role": "user", "content": "weather in Oslo"}],
            tools=[
                {
                    "type": "function",
                    "name": "get_weather",
                    "parameters": WEATHER_TOOL["function"].get("parameters"),
                    "strict": False,
                }
            ],
            tool_choice="auto",
            text={"format": {"type": "json_object"}},
        )

    r = await in_thread(gateway, call)
    # The Mock answers with text only (no function_call items): JSON, as json_object asks.
    assert [item.type for item in r.output] == ["message"]
    assert r.output_text == "{}"


async def test_responses_stream_event_sequence_and_final_response(gateway: Running) -> None:
    prompt = "Stream this answer"

    def call(client: openai.OpenAI) -> tuple[list[Any], Any]:
        with client.responses.stream(model="gpt-4.1", input=prompt) as stream:
            events = list(stream)
            return events, stream.get_final_response()

    events, final = await in_thread(gateway, call)
    types = [e.type for e in events]
    answer = mock_answer("gpt-4.1", prompt)
    n = len(answer.split())
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * n,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == answer
    assert final.id.startswith("resp_")
    assert final.id == events[0].response.id
    assert final.status == "completed"
    assert final.output_text == answer
    assert final.usage.input_tokens == input_tokens(prompt)
    assert final.usage.output_tokens == n


async def test_responses_stream_cut_ends_with_error_and_failed(gateway: Running) -> None:
    def call(client: openai.OpenAI) -> tuple[list[Any], list[Any]]:
        with client.responses.stream(
            model="gpt-4.1", input="one two three", metadata={"mock_scenario": "cut_after=2"},
            extra_headers={"x-request-id": "sdk-cut-1"},
        ) as stream:  # fmt: skip
            managed = list(stream)
        raw = client.responses.create(
            model="gpt-4.1", input="one two three", stream=True,
            metadata={"mock_scenario": "cut_after=2"}, extra_headers={"x-request-id": "sdk-cut-2"},
        )  # fmt: skip
        return managed, list(raw)

    for events, rid in zip(await in_thread(gateway, call), ["sdk-cut-1", "sdk-cut-2"], strict=True):
        assert [e.type for e in events[-2:]] == ["error", "response.failed"]
        assert [e.type for e in events].count("response.output_text.delta") == 2
        error, failed = events[-2:]
        assert failed.response.status == "failed"
        # The SDK parses the gateway's own code (not in its Literal list) and both agree.
        assert failed.response.error is not None
        assert error.code == failed.response.error.code == "upstream_error"
        assert error.request_id == failed.response.error.request_id == rid  # extra fields kept


# -- the original path -----------------------------------------------------------------------


async def test_original_chat_dot_completions_path_with_httpx(gateway: Running) -> None:
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "dot path"}]}
    async with gateway.client() as client:
        dotted = await client.post("/v1/chat.completions", json=body)
        slashed = await client.post("/v1/chat/completions", json=body)
        streamed = await client.post("/v1/chat.completions", json={**body, "stream": True})
    assert dotted.status_code == 200, dotted.text
    a, b = dotted.json(), slashed.json()
    assert a["object"] == "chat.completion"
    assert a["choices"][0]["message"]["content"] == mock_answer("gpt-4.1", "dot path")
    assert a["choices"] == b["choices"]
    assert a["usage"] == b["usage"]
    assert a["id"] != b["id"]

    assert streamed.headers["content-type"].startswith("text/event-stream")
    data = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == a["choices"][0]["message"]["content"]
