"""`Idempotency-Key` across two real `umg serve` processes on one Postgres database.

The provider is the fake provider server (real sockets, it counts every call); both
gateways are OS processes in live mode pointed at it. The same key sent to both at once
gives one provider call, one ledger row, one job; the loser is told 409 while the first
runs and gets the replay afterwards, from either process and after both restarted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from adapters.storage import open_storage
from tests.adapters.conftest import postgres_url  # noqa: F401  (the fixture)
from tests.fakes import FakeProvider, Fault, running_fake_provider
from tests.server.test_process import ANY_PORT, umg_serve

pytestmark = pytest.mark.postgres

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "exactly once"}]}


def env_for(database: str, fake: FakeProvider) -> dict[str, str]:
    return {
        "DATABASE_URL": database,
        "OPENAI_API_KEY": "sk-fake-openai-1234567890",
        "OPENAI_BASE_URL": fake.openai_base_url,
    }


@asynccontextmanager
async def two_gateways(env: dict[str, str], fresh: bool = True) -> AsyncIterator[tuple[list[str], str]]:
    """Two processes; the key is the development key the first prints on a fresh database."""
    async with umg_serve("serve", "--port", ANY_PORT, env=env) as first:
        url_1 = await first.started()
        key = await first.dev_key() if fresh else ""
        async with umg_serve("serve", "--port", ANY_PORT, env=env) as second:
            url_2 = await second.started()
            yield [url_1, url_2], key


def provider_calls(fake: FakeProvider) -> int:
    return sum(r.path.endswith("/chat/completions") for r in fake.requests)


async def ledger_rows(database: str) -> int:
    storage = open_storage(database)
    try:
        return await storage.usage_count()
    finally:
        await storage.close()


async def post_both(urls: list[str], key: str, path: str, body: dict[str, Any],
                    idem_key: str) -> list[httpx.Response]:
    got: list[httpx.Response] = []

    async def post(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=20) as client:
            got.append(await client.post(path, json=body, headers={
                "authorization": f"Bearer {key}", "idempotency-key": idem_key}))

    async with trio.open_nursery() as nursery:
        for url in urls:
            nursery.start_soon(post, url)
    return got


async def test_one_key_sent_to_two_processes_at_once_runs_once(postgres_url: str) -> None:  # noqa: F811
    async with running_fake_provider() as fake:
        fake.script(Fault(delay=1.0))  # the one call is slow: the other request overlaps it
        env = env_for(postgres_url, fake)
        async with two_gateways(env) as (urls, key):
            both = await post_both(urls, key, CHAT, BODY, "once")
            assert sorted(r.status_code for r in both) == [200, 409]
            [ran] = [r for r in both if r.status_code == 200]
            [busy] = [r for r in both if r.status_code == 409]
            assert busy.json()["error"]["code"] == "idempotency_key_in_use"
            assert int(busy.headers["retry-after"]) >= 1
            assert provider_calls(fake) == 1
            replays = await post_both(urls, key, CHAT, BODY, "once")  # each process replays
            assert [r.headers.get("idempotent-replayed") for r in replays] == ["true", "true"]
            assert all(r.content == ran.content for r in replays)
            other = await post_both(urls[:1], key, CHAT, {**BODY, "temperature": 0.5}, "once")
            assert other[0].status_code == 422
            assert provider_calls(fake) == 1
            assert await ledger_rows(postgres_url) == 1

            jobs = await post_both(urls, key, "/v1/jobs", {"request": {
                "model": "gpt-4.1-mini", "input": "a job once"}}, "job-once")
            created = {r.json()["id"] for r in jobs if r.status_code in (200, 202)}
            assert len(created) == 1 and all(r.status_code in (200, 202, 409) for r in jobs)
            async with httpx.AsyncClient(base_url=urls[1], timeout=20,
                                         headers={"authorization": f"Bearer {key}"}) as client:
                listed = (await client.get("/v1/jobs")).json()["data"]
                assert [j["id"] for j in listed] == list(created)
                done = await client.get(f"/v1/jobs/{listed[0]['id']}", headers={"prefer": "wait=20"})
                assert done.json()["status"] == "succeeded"
            assert await ledger_rows(postgres_url) == 2  # the chat once, the job once

        # both processes stopped: a third one replays from the database
        async with two_gateways(env, fresh=False) as (urls, _):
            again = await post_both(urls[:1], key, CHAT, BODY, "once")
        assert again[0].headers["idempotent-replayed"] == "true"
        assert again[0].content == ran.content
        assert provider_calls(fake) == 2  # the chat once, the job once
        assert await ledger_rows(postgres_url) == 2


async def test_a_stream_replayed_by_the_other_process_is_the_same_bytes(
    postgres_url: str,  # noqa: F811
) -> None:
    async with running_fake_provider() as fake:
        async with two_gateways(env_for(postgres_url, fake)) as (urls, key):
            body = {"model": "gpt-4.1-mini", "input": "stream me across processes",
                    "stream": True}
            seen: list[httpx.Response] = []
            for url in urls:
                async with httpx.AsyncClient(base_url=url, timeout=20) as client:
                    seen.append(await client.post("/v1/responses", json=body, headers={
                        "authorization": f"Bearer {key}", "idempotency-key": "stream"}))
        first, again = seen
        assert first.headers["content-type"].startswith("text/event-stream")
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == first.content and b"response.completed" in first.content
        assert sum(r.path.endswith("/responses") or r.path.endswith("/chat/completions")
                   for r in fake.requests) == 1
        assert await ledger_rows(postgres_url) == 1


