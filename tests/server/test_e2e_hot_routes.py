"""The hot model routes are answered in front of Quart (server/hot.py); the rest is Quart's.

POST on a hot path goes through `HotRoutes`; every other method on those paths still gets
Quart's answer (405 in the error shape, OPTIONS with `allow`), and a kept-alive
connection serves a JSON answer, a stream and an error one after another.
"""

from __future__ import annotations

import pytest

from server.app import HOT_ROUTES
from tests.server.conftest import Running

HOT = ["/v1/chat/completions", "/v1/chat.completions", "/v1/responses", "/v1/responses/stream", "/v1/messages"]


def test_the_hot_paths_are_the_five_model_routes() -> None:
    assert sorted(HOT_ROUTES) == sorted(HOT)


@pytest.mark.parametrize("path", HOT)
async def test_other_methods_on_a_hot_path_get_quarts_answers(gateway: Running, path: str) -> None:
    async with gateway.client() as client:
        got = await client.get(path, headers={"x-request-id": "hot-1"})
        options = await client.options(path)
    assert got.status_code == 405
    assert got.json()["error"]["message"] == f"Method GET is not allowed on {path}"
    shaped = got.json() if path == "/v1/messages" else got.json()["error"]  # Anthropic's shape
    assert shaped["request_id"] == "hot-1"
    assert options.status_code == 200
    assert set(options.headers["allow"].replace(" ", "").split(",")) == {"POST", "OPTIONS"}


async def test_one_connection_serves_json_a_stream_and_an_error_in_turn(gateway: Running) -> None:
    body = {"model": "mock-fast", "messages": [{"role": "user", "content": "hello"}]}
    async with gateway.client() as client:
        whole = await client.post("/v1/chat/completions", json=body)
        async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
            streamed = b"".join([part async for part in s.aiter_bytes()])
        refused = await client.post("/v1/chat/completions", json={**body, "model": 1})
        again = await client.post("/v1/messages", json={**body, "max_tokens": 16})
    assert whole.status_code == 200 and whole.json()["object"] == "chat.completion"
    assert s.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert streamed.rstrip().endswith(b"data: [DONE]")
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "model"
    assert again.status_code == 200 and again.json()["type"] == "message"
    assert whole.headers["x-request-id"] != again.headers["x-request-id"]
    assert await gateway.services.storage.usage_count() == 4
