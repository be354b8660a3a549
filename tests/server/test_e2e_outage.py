"""End to end: a provider-wide outage with the default settings falls back to another provider.

The gateway runs with no configuration file (default routing strategy, default attempt
policy) and its OpenAI and Anthropic adapters pointed at the fake provider. An outage is
`fake.outages[path] = Fault(...)`: every OpenAI request fails the same way. The catalog
promises (docs/providers.md) that `gpt-4.1` falls back to Claude; the cost-ordered plan is
gpt-4.1, gpt-4o (both OpenAI), claude-sonnet-4, so the cross-provider rule
(core/fallback.py) is what reaches Claude before the attempts run out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from adapters.config.loader import load_settings
from tests.fakes import FakeProvider, Fault, running_fake_provider
from tests.server.conftest import Running, start_gateway
from tests.server.live import PROVIDER_KEYS

OPENAI_PATHS = ("/v1/chat/completions", "/v1/responses")
ANTHROPIC = "/v1/messages"


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with running_fake_provider() as provider:
        yield provider


async def default_gateway(nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider) -> Running:
    settings = load_settings({
        "DATABASE_URL": f"sqlite:///{tmp_path}/outage.db",
        "OPENAI_BASE_URL": fake.openai_base_url,
        "ANTHROPIC_BASE_URL": fake.base_url,
        **PROVIDER_KEYS,
    })
    assert not settings.mock_mode
    return await start_gateway(nursery, settings)


def chat(model: str = "gpt-4.1") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello there"}]}


def attempts(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["provider"], a["outcome"]) for a in body["gateway"]["attempts"]]


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (Fault(status=500), "server_error"),
        (Fault(status=503), "overloaded"),
        (Fault(status=529), "overloaded"),
        (Fault(reset=True), "stream_cut"),  # the connection closed without an answer
    ],
)
async def test_an_openai_wide_outage_falls_back_to_claude_with_default_settings(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider, fault: Fault, kind: str
) -> None:
    gw = await default_gateway(nursery, tmp_path, fake)
    for path in OPENAI_PATHS:
        fake.outages[path] = fault
    async with gw.client() as client:
        r = await client.post("/v1/chat/completions", json={**chat(), "stream": False})
        s = await client.post("/v1/chat/completions", json={
            **chat(), "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "Echo: hello there"
    assert attempts(body) == [("openai", kind), ("anthropic", "ok")]
    assert body["gateway"]["model"] == "claude-sonnet-4"
    assert s.status_code == 200, s.text
    assert "Echo:" in s.text and "data: [DONE]" in s.text
    sent = [q.path for q in fake.requests]
    if fault.reset:
        # The second OpenAI attempt goes out on the connection pooled by the first Claude
        # call; closed without an answer, it looks stale, so the transport sends it once
        # more on a fresh connection (adapters/providers/http11.py) before failing over.
        assert sent == ["/v1/chat/completions", ANTHROPIC] + ["/v1/chat/completions"] * 2 + [
            ANTHROPIC]
    else:
        assert sent == ["/v1/chat/completions", ANTHROPIC] * 2
    gw.stop.set()


async def test_when_every_provider_is_down_the_error_lists_the_attempts_without_their_messages(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider
) -> None:
    gw = await default_gateway(nursery, tmp_path, fake)
    secret = "the provider's own words, which stay inside"
    for path in (*OPENAI_PATHS, ANTHROPIC):
        fake.outages[path] = Fault(status=500, message=secret)
    async with gw.client() as client:
        r = await client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert error["code"] == "upstream_error"
    message = error["message"]
    assert message.startswith("4 upstream attempt(s) failed; the last failure was: server_error")
    # openai first, then anthropic; then both are down and the ordinary retry applies
    assert ("(attempts: openai/gpt-4.1: server_error, "
            "anthropic/claude-sonnet-4-20250514: server_error, ") in message
    assert secret not in message and "fake provider" not in message
    assert len(fake.requests) == 4
    gw.stop.set()


async def test_the_outage_ends_and_openai_answers_again(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider
) -> None:
    gw = await default_gateway(nursery, tmp_path, fake)
    fake.outages["/v1/chat/completions"] = Fault(status=502)
    async with gw.client() as client:
        r = await client.post("/v1/chat/completions", json=chat())
        assert attempts(r.json()) == [("openai", "server_error"), ("anthropic", "ok")]
        del fake.outages["/v1/chat/completions"]
        r = await client.post("/v1/chat/completions", json=chat())
    assert isinstance(r, httpx.Response) and r.status_code == 200, r.text
    assert attempts(r.json()) == [("openai", "ok")]
    gw.stop.set()
