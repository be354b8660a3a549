"""`Idempotency-Key` end to end, on one gateway (SQLite, Mock provider): replay, 422, 409,
released failures, streams replayed byte for byte, jobs, tenants, restarts, the SDK.

The two-process Postgres proof (one provider call, one ledger row, one job when both
gateways get the same key at once) is in `test_e2e_idempotency_postgres.py`.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import trio

from adapters.idempotency import IdempotencyKeys
from tests.server.conftest import Running, start_gateway
from tests.server.conftest import test_settings as settings_for

CHAT = "/v1/chat/completions"


def chat(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "mock-fast", "messages": [{"role": "user", "content": text}], **extra}


def slow(ms: int) -> dict[str, Any]:
    return {"mock_scenario": f"latency_ms={ms}"}


async def rows(gateway: Running, tenant: str = "t1") -> list[Any]:
    now = datetime.now(UTC)
    return await gateway.services.storage.usage_rows(
        tenant, now - timedelta(days=1), now + timedelta(days=1)
    )


async def test_a_repeat_replays_the_answer_without_a_second_row(gateway: Running) -> None:
    async with gateway.client() as client:
        first = await client.post(CHAT, json=chat(), headers={"idempotency-key": "k1"})
        again = await client.post(CHAT, json=chat(), headers={"idempotency-key": "k1"})
        spaced = await client.post(  # the same JSON written differently is the same body
            CHAT, content=b'{"messages":[{"content":"hello","role":"user"}], "model":"mock-fast"}',
            headers={"idempotency-key": "k1", "content-type": "application/json"},
        )
        other = await client.post(CHAT, json=chat(), headers={"idempotency-key": "k2"})
    assert first.status_code == again.status_code == spaced.status_code == 200
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content == spaced.content  # same id, same text, same cost
    assert again.headers["content-type"] == first.headers["content-type"]
    assert other.json()["id"] != first.json()["id"]
    assert len(await rows(gateway)) == 2  # k1 once, k2 once


async def test_the_same_key_with_another_body_is_a_422(gateway: Running) -> None:
    async with gateway.client() as client:
        await client.post(CHAT, json=chat("one"), headers={"idempotency-key": "k"})
        other = await client.post(CHAT, json=chat("two"), headers={"idempotency-key": "k"})
        elsewhere = await client.post(
            "/v1/responses", json={"model": "mock-fast", "input": "one"},
            headers={"idempotency-key": "k"},
        )
        messages = await client.post(
            "/v1/messages",
            json={"model": "mock-fast", "max_tokens": 20,
                  "messages": [{"role": "user", "content": "one"}]},
            headers={"idempotency-key": "k"},
        )
    assert other.status_code == elsewhere.status_code == messages.status_code == 422
    error = other.json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert error["param"] == "Idempotency-Key"
    assert error["type"] == "invalid_request_error"
    assert messages.json()["type"] == "error"  # Anthropic's shape on /v1/messages
    assert len(await rows(gateway)) == 1


async def test_a_repeat_while_the_first_runs_is_a_409_with_retry_after(gateway: Running) -> None:
    body = chat(metadata=slow(600))
    got: dict[str, httpx.Response] = {}
    async with gateway.client() as client:

        async def first() -> None:
            got["first"] = await client.post(CHAT, json=body, headers={"idempotency-key": "busy"})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            await trio.sleep(0.2)
            got["second"] = await client.post(CHAT, json=body, headers={"idempotency-key": "busy"})
        after = await client.post(CHAT, json=body, headers={"idempotency-key": "busy"})
    assert got["first"].status_code == 200
    busy = got["second"]
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "idempotency_key_in_use"
    assert int(busy.headers["retry-after"]) >= 1
    assert after.headers["idempotent-replayed"] == "true"
    assert after.content == got["first"].content
    assert len(await rows(gateway)) == 1


async def test_a_refusal_is_not_kept_so_a_corrected_retry_runs(gateway: Running) -> None:
    async with gateway.client() as client:
        unknown = await client.post(
            CHAT, json=chat(model="no-such-model"), headers={"idempotency-key": "fix"}
        )
        fixed = await client.post(CHAT, json=chat(), headers={"idempotency-key": "fix"})
        bad_json = await client.post(
            CHAT, content=b"{nope", headers={"idempotency-key": "j", "content-type": "application/json"}
        )
        no_key = await client.post(CHAT, json=chat(), headers={"idempotency-key": "x",
                                                                "authorization": "Bearer nope"})
    assert unknown.status_code == 404
    assert fixed.status_code == 200 and "idempotent-replayed" not in fixed.headers
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
    assert no_key.status_code == 401


async def test_a_stream_failing_before_any_output_is_released(gateway: Running) -> None:
    body = {"model": "mock-fast", "input": "hi", "metadata": {"mock_scenario": "fail=500"}}
    async with gateway.client() as client:
        first = await client.post("/v1/responses/stream", json=body, headers={"idempotency-key": "s"})
        again = await client.post("/v1/responses/stream", json=body, headers={"idempotency-key": "s"})
    assert first.status_code == again.status_code == 200
    assert "response.failed" in first.text
    assert "idempotent-replayed" not in again.headers  # it ran again: nothing was billed
    assert [r.cost for r in await rows(gateway)] == [0, 0]


async def test_a_stream_replays_the_same_events_framed_the_same(gateway: Running) -> None:
    async def read(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
        async with client.stream("POST", path, json=body, headers={"idempotency-key": "st"}) as r:
            await r.aread()
            return r

    body = {"model": "mock-fast", "input": "stream these words please"}
    async with gateway.client() as client:
        first = await read(client, "/v1/responses/stream", body)
        again = await read(client, "/v1/responses/stream", body)
        chat_first = await read(client, CHAT, chat(stream=True, stream_options={"include_usage": True}))
    assert first.headers["content-type"].startswith("text/event-stream")
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert b"response.completed" in again.content
    assert chat_first.status_code == 422  # same key, other route: another request
    assert len(await rows(gateway)) == 1


async def test_keys_are_per_tenant(gateway: Running) -> None:
    other_key = await gateway.new_key(tenant="t2")
    async with gateway.client() as mine, gateway.client(other_key) as theirs:
        a = await mine.post(CHAT, json=chat(), headers={"idempotency-key": "shared"})
        b = await theirs.post(CHAT, json=chat(), headers={"idempotency-key": "shared"})
    assert a.status_code == b.status_code == 200
    assert "idempotent-replayed" not in b.headers
    assert len(await rows(gateway, "t1")) == len(await rows(gateway, "t2")) == 1


async def test_a_bad_key_is_a_400_naming_the_header(gateway: Running) -> None:
    async with gateway.client() as client:
        r = await client.post(CHAT, json=chat(), headers={"idempotency-key": "x" * 256})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "Idempotency-Key"
    assert await rows(gateway) == []


async def test_jobs_with_a_key_are_created_once(gateway: Running) -> None:
    body = {"request": {"model": "mock-fast", "input": "job once"}}
    async with gateway.client() as client:
        first = await client.post("/v1/jobs", json=body, headers={"idempotency-key": "job"})
        again = await client.post("/v1/jobs", json=body, headers={"idempotency-key": "job"})
        listed = await client.get("/v1/jobs")
    assert first.status_code == again.status_code
    assert first.status_code in (200, 202)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert [j["id"] for j in listed.json()["data"]] == [first.json()["id"]]


async def test_a_kept_answer_is_replayed_after_a_restart_and_expires(tmp_path: Path) -> None:
    cfg = tmp_path / "idem.toml"
    cfg.write_text("[idempotency]\nttl_seconds = 3600\n")
    settings = settings_for(tmp_path, UMG_CONFIG=str(cfg))
    async with trio.open_nursery() as nursery:
        one = await start_gateway(nursery, settings)
        async with one.client() as client:
            first = await client.post(CHAT, json=chat(), headers={"idempotency-key": "r"})
        one.stop.set()
    async with trio.open_nursery() as nursery:
        two = await start_gateway(nursery, settings)
        async with two.client(one.key) as client:
            again = await client.post(CHAT, json=chat(), headers={"idempotency-key": "r"})
        two.stop.set()
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content


async def test_expired_keys_run_again(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, UMG_IDEMPOTENCY_TTL_SECONDS="0.2")
    async with trio.open_nursery() as nursery:
        gw = await start_gateway(nursery, settings)
        async with gw.client() as client:
            first = await client.post(CHAT, json=chat(), headers={"idempotency-key": "e"})
            await trio.sleep(0.3)
            again = await client.post(CHAT, json=chat(), headers={"idempotency-key": "e"})
        gw.stop.set()
    assert "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first.json()["id"]


async def test_the_openai_sdk_sends_the_key_with_extra_headers(gateway: Running) -> None:
    def call() -> tuple[Any, Any]:
        with openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0) as sdk:
            ask = {"model": "mock-fast", "messages": [{"role": "user", "content": "sdk"}],
                   "extra_headers": {"Idempotency-Key": "sdk-1"}}
            first = sdk.chat.completions.with_raw_response.create(**ask)
            again = sdk.chat.completions.with_raw_response.create(**ask)
            return first, again

    first, again = await trio.to_thread.run_sync(call)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.parse().id == first.parse().id
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert len(await rows(gateway)) == 1


async def test_storage_that_cannot_be_asked_fails_closed_with_a_503(gateway: Running) -> None:
    async def unavailable(tenant: str, key: str, fn: Any) -> Any:
        raise sqlite3.OperationalError("database is locked")

    gateway.services.storage.idempotency_step = unavailable  # type: ignore[method-assign]
    async with gateway.client() as client:
        refused = await client.post(CHAT, json=chat(), headers={"idempotency-key": "down"})
        plain = await client.post(CHAT, json=chat())  # without the header: served
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "service_unavailable"
    assert refused.headers["retry-after"] == "1"
    assert plain.status_code == 200
    assert len(await rows(gateway)) == 1  # the keyed one never ran


async def test_a_stream_the_client_left_is_released_so_the_retry_runs(gateway: Running) -> None:
    # not stored: a stored stream would go on detached to its end (then be replayed)
    body = {"model": "mock-fast", "input": "one two three four five six", "store": False,
            "metadata": {"mock_scenario": "chunk_delay_ms=300"}}
    async with gateway.client() as client:
        async with client.stream("POST", "/v1/responses/stream", json=body,
                                 headers={"idempotency-key": "left"}) as r:
            async for _ in r.aiter_bytes():
                break  # the first bytes, then hang up
        await trio.sleep(0.3)
        again = await client.post("/v1/responses/stream", json=body, headers={"idempotency-key": "left"})
    assert again.status_code == 200 and "idempotent-replayed" not in again.headers
    assert b"response.completed" in again.content
    statuses = sorted(r.status for r in await rows(gateway))
    assert statuses == ["client_closed", "ok"]


async def test_an_answer_is_kept_before_its_last_byte(gateway: Running, monkeypatch: Any) -> None:
    """So a retry sent the moment the answer has arrived is replayed, not a 409 (the
    OpenAI SDK test above lost that race now and then when the key was finished after)."""
    order: list[str] = []
    finish = IdempotencyKeys.finish

    async def noted(self: IdempotencyKeys, claim: Any, answer: Any, keep: bool) -> None:
        await finish(self, claim, answer, keep)
        order.append(f"finished keep={keep}")

    monkeypatch.setattr(IdempotencyKeys, "finish", noted)
    async with gateway.client() as client:
        first = await client.post(CHAT, json=chat(), headers={"idempotency-key": "before-last"})
        order.append("answer received")
        again = await client.post(CHAT, json=chat(), headers={"idempotency-key": "before-last"})
    assert order == ["finished keep=True", "answer received"]
    assert again.headers["idempotent-replayed"] == "true" and again.content == first.content
