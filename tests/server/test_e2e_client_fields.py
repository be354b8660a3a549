"""Issue 13's edges through the real gateway (mock mode): the Anthropic SDK's token count
and model list, the 401 hint on /v1/messages, and the output limit clamp said in the
`gateway` block."""

from __future__ import annotations

from typing import Any

import anthropic
import trio

from tests.server.conftest import Running

CLAUDE = "claude-sonnet-4-20250514"


async def test_count_tokens_and_models_through_the_anthropic_sdk(gateway: Running) -> None:
    def run() -> tuple[Any, Any, Any]:
        with anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0) as c:
            count = c.messages.count_tokens(
                model=CLAUDE, messages=[{"role": "user", "content": "how many tokens is this"}]
            )
            models = c.models.list()
            one = c.models.retrieve(CLAUDE)
            return count, models, one

    count, models, one = await trio.to_thread.run_sync(run)
    assert count.input_tokens > 5
    ids = [m.id for m in models.data]
    assert "claude-sonnet-4" in ids and models.has_more is False
    assert all(m.display_name and m.created_at and m.type == "model" for m in models.data)
    assert (one.id, one.type) == ("claude-sonnet-4", "model")  # the alias resolves


async def test_count_tokens_refuses_an_unknown_model_and_a_missing_key(gateway: Running) -> None:
    async with gateway.client() as client:
        body = {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}
        r = await client.post("/v1/messages/count_tokens", json=body)
        assert r.status_code == 404 and r.json()["type"] == "error"
        r = await client.post("/v1/messages", json=body, headers={"authorization": ""})
    assert r.status_code == 401
    message = r.json()["error"]["message"]
    assert "x-api-key" in message and "Bearer" in message


async def test_max_tokens_over_the_deployment_limit_is_clamped_and_said(gateway: Running) -> None:
    async with gateway.client() as client:
        r = await client.post("/v1/chat/completions", json={
            "model": "gpt-4.1", "max_tokens": 10_000_000,
            "messages": [{"role": "user", "content": "hi"}],
        })
    assert r.status_code == 200, r.text
    note = r.json()["gateway"]["max_output_tokens"]
    assert note["requested"] == 10_000_000 and 0 < note["sent"] < 10_000_000
