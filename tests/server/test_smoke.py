"""The real server on port 0 answers the unified API, chat, and streams, through the Mock."""

from __future__ import annotations

import json

from tests.server.conftest import Running


async def test_unified_response_records_usage(gateway: Running) -> None:
    async with gateway.client() as client:
        r = await client.post("/v1/responses", json={"model": "gpt-4.1", "input": {"prompt": "Hello there"}})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "response"
        assert "Hello there" in body["output"][0]["content"][0]["text"]
        assert body["gateway"]["provider"] == "openai"
        assert body["usage"]["output_tokens"] > 0
    assert await gateway.services.storage.usage_count() == 1


async def test_missing_key_is_401(gateway: Running) -> None:
    async with gateway.client(key="umg_live_nope") as client:
        r = await client.get("/v1/models")
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"


async def test_stream_ends_with_completed(gateway: Running) -> None:
    async with gateway.client() as client:
        r = await client.post("/v1/responses/stream", json={"model": "gpt-4.1", "input": {"prompt": "Stream please"}})
        assert r.status_code == 200
        events = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
        assert events[0] == "response.created"
        assert events[-1] == "response.completed"
        last = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")][-1]
        assert json.loads(last)["response"]["gateway"]["cost_usd"] != "0"


async def test_request_larger_than_tpm_is_a_clear_429(gateway: Running) -> None:
    key = await gateway.new_key(tpm=10)
    async with gateway.client(key=key) as client:
        r = await client.post(
            "/v1/responses",
            json={"model": "gpt-4.1", "input": {"prompt": "word " * 200}},
        )
        assert r.status_code == 429, r.text
        assert "too large" in r.json()["error"]["message"]
