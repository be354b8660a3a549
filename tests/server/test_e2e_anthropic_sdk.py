"""The official `anthropic` SDK against the real gateway's `/v1/messages` (mock mode).

The SDK (built on httpx2) runs synchronously in a worker thread; it authenticates with
`x-api-key`. Expected texts and token counts follow the Mock's documented rules
(adapters/providers/mock.py): "Mock answer from <upstream>: " + the last user message's
words; input tokens are one per word plus 4 per message (the system prompt counts as one
message); output tokens one per answer word.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anthropic
import httpx
import pytest
import trio

from adapters.storage.records import UsageRecord
from tests.server.conftest import Running

T = TypeVar("T")

MODEL = "claude-sonnet-4-20250514"  # Anthropic's own name: an alias of claude-sonnet-4


def mock_answer(upstream: str, user_text: str) -> str:
    return " ".join(["Mock", "answer", "from", f"{upstream}:", *user_text.split()])


def input_tokens(*texts: str) -> int:
    return sum(len(t.split()) + 4 for t in texts)


async def in_thread(
    gateway: Running, fn: Callable[[anthropic.Anthropic], T], key: str | None = None
) -> T:
    def run() -> T:
        with anthropic.Anthropic(
            base_url=gateway.url, api_key=key or gateway.key, max_retries=0, timeout=20
        ) as client:
            return fn(client)

    return await trio.to_thread.run_sync(run)


async def ledger(gateway: Running) -> list[UsageRecord]:
    now = datetime.now(UTC)
    return await gateway.services.storage.usage_rows(
        "t1", now - timedelta(days=1), now + timedelta(days=1)
    )


async def test_messages_create_with_system_prompt(gateway: Running) -> None:
    system, prompt = "You answer in one short line", "Hello Claude how are you"

    def call(client: anthropic.Anthropic) -> Any:
        return client.messages.create(
            model=MODEL,
            max_tokens=200,
            system=system,
            messages=[{"role": "user", "content": prompt}],
        )

    m = await in_thread(gateway, call)
    expected = mock_answer(MODEL, prompt)
    assert m.type == "message"
    assert m.role == "assistant"
    assert m.id.startswith("msg_")
    assert m.model == MODEL
    assert [block.type for block in m.content] == ["text"]
    assert m.content[0].text == expected
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens == input_tokens(system, prompt)
    assert m.usage.output_tokens == len(expected.split())

    info = (m.model_extra or {})["gateway"]
    assert info["provider"] == "anthropic"
    [row] = [r for r in await ledger(gateway) if r.request_id == info["request_id"]]
    assert row.endpoint == "messages"
    assert row.status == "ok"
    assert (row.input_tokens, row.output_tokens) == (m.usage.input_tokens, m.usage.output_tokens)
    assert row.cost > 0


async def test_system_prompt_as_text_blocks_counts_like_a_string(gateway: Running) -> None:
    def call(client: anthropic.Anthropic) -> tuple[Any, Any, Any]:
        kwargs: dict[str, Any] = {
            "model": MODEL,
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}],
        }
        plain = client.messages.create(**kwargs)
        as_string = client.messages.create(**kwargs, system="be nice please")
        as_blocks = client.messages.create(
            **kwargs, system=[{"type": "text", "text": "be nice please"}]
        )
        return plain, as_string, as_blocks

    plain, as_string, as_blocks = await in_thread(gateway, call)
    assert as_string.usage.input_tokens == plain.usage.input_tokens + input_tokens("be nice please")
    assert as_blocks.usage.input_tokens == as_string.usage.input_tokens
    assert as_blocks.content[0].text == plain.content[0].text == mock_answer(MODEL, "hi")


async def test_max_tokens_cut_is_stop_reason_max_tokens(gateway: Running) -> None:
    def call(client: anthropic.Anthropic) -> Any:
        return client.messages.create(
            model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "x y z w"}]
        )

    m = await in_thread(gateway, call)
    assert m.stop_reason == "max_tokens"
    assert m.content[0].text == "Mock answer from"
    assert m.usage.output_tokens == 3


async def test_messages_stream_matches_the_whole_answer(gateway: Running) -> None:
    system, prompt = "Be brief", "Stream these few words"
    kwargs: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 100,
        "system": system,
        "messages": [{"role": "user", "content": prompt}],
    }

    def call(client: anthropic.Anthropic) -> tuple[Any, list[Any], str, Any]:
        whole = client.messages.create(**kwargs)
        with client.messages.stream(**kwargs) as stream:
            events = list(stream)
            text = "".join(e.text for e in events if e.type == "text")
            return whole, events, text, stream.get_final_message()

    whole, events, text, final = await in_thread(gateway, call)
    raw = [e.type for e in events if e.type not in ("text",)]
    n = len(whole.content[0].text.split())
    assert raw == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * n,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0].message.id.startswith("msg_")
    assert events[0].message.id == final.id
    assert text == whole.content[0].text
    assert final.content[0].text == whole.content[0].text
    assert final.stop_reason == whole.stop_reason == "end_turn"
    assert final.usage.input_tokens == whole.usage.input_tokens == input_tokens(system, prompt)
    assert final.usage.output_tokens == whole.usage.output_tokens == n
    [delta] = [e for e in events if e.type == "message_delta"]
    assert delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens == n


async def test_stream_text_stream_helper_and_max_tokens(gateway: Running) -> None:
    def call(client: anthropic.Anthropic) -> tuple[list[str], Any]:
        with client.messages.stream(
            model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "a b c"}]
        ) as stream:
            return list(stream.text_stream), stream.get_final_message()

    pieces, final = await in_thread(gateway, call)
    assert pieces == ["Mock", " answer"]
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 2


async def test_unknown_model_is_not_found_with_anthropic_error_shape(gateway: Running) -> None:
    def call(client: anthropic.Anthropic) -> Any:
        return client.messages.create(
            model="claude-nope", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )

    with pytest.raises(anthropic.NotFoundError) as caught:
        await in_thread(gateway, call)
    err = caught.value
    assert err.status_code == 404
    assert isinstance(err.body, dict)
    assert err.body["type"] == "error"
    assert err.body["error"]["type"] == "not_found_error"
    assert "claude-nope" in err.body["error"]["message"]


async def test_bad_key_is_authentication_error_with_anthropic_error_shape(gateway: Running) -> None:
    def call(client: anthropic.Anthropic) -> Any:
        return client.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )

    with pytest.raises(anthropic.AuthenticationError) as caught:
        await in_thread(gateway, call, key="umg_live_notakey")
    err = caught.value
    assert err.status_code == 401
    assert isinstance(err.body, dict)
    assert err.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": err.body["error"]["message"]},
        "request_id": err.response.headers["x-request-id"],
    }
    assert await gateway.services.storage.usage_count() == 0


async def test_invalid_request_is_bad_request_with_anthropic_error_shape(gateway: Running) -> None:
    def call(client: anthropic.Anthropic) -> Any:
        return client.messages.create(
            model=MODEL,
            max_tokens=0,  # must be >= 1
            messages=[{"role": "user", "content": "hi"}],
        )

    with pytest.raises(anthropic.BadRequestError) as caught:
        await in_thread(gateway, call)
    err = caught.value
    assert isinstance(err.body, dict)
    assert err.body["type"] == "error"
    assert err.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in err.body["error"]["message"]
    # A parse failure of an authenticated caller still leaves its one ledger row.
    [row] = await ledger(gateway)
    assert row.endpoint == "messages"
    assert row.status == "error"


async def test_bearer_auth_is_accepted_too(gateway: Running) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as client:
        body = {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
        by_header = await client.post("/v1/messages", json=body, headers={"x-api-key": gateway.key})
        by_bearer = await client.post(
            "/v1/messages", json=body, headers={"authorization": f"Bearer {gateway.key}"}
        )
        missing = await client.post("/v1/messages", json=body)
    assert by_header.status_code == by_bearer.status_code == 200
    assert by_header.json()["content"] == by_bearer.json()["content"]
    assert missing.status_code == 401
    assert missing.json()["type"] == "error"
    assert missing.json()["error"]["type"] == "authentication_error"
