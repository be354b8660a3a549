"""`GET /v1/jobs/{id}/stream` end to end: a job's events as SSE with `id:` lines, replayed
for a finished job, live for one that runs, resumed after `Last-Event-ID` /
`starting_after`, tenant-scoped; and on Postgres, followed through a `--no-workers`
gateway while a separate `umg worker` process runs the job.

Events (core/job_events.py): `job.queued`, `job.running` (one per run), then the terminal
`job.<status>`, whose data also carries the job object (with its result); the stream ends
after it. A job's run is collected, not streamed: there are no output deltas.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from core.sse import SSEDecoder, SSEEvent
from tests.adapters.conftest import postgres_url  # noqa: F401  (the fixture)
from tests.server.conftest import Running
from tests.server.test_e2e_jobs import REQUEST, create, fast_settings, gateway, scenario, until
from tests.server.test_e2e_worker_processes import config, worker_ready
from tests.server.test_process import ANY_PORT, UMG, clean_env, umg_serve

__all__ = ["gateway"]  # the fixture, shared with test_e2e_jobs
Json = dict[str, Any]


async def stream_events(
    client: httpx.AsyncClient, job_id: str, *, last_event_id: str | None = None, **params: str
) -> list[SSEEvent]:
    headers = {} if last_event_id is None else {"last-event-id": last_event_id}
    async with client.stream("GET", f"/v1/jobs/{job_id}/stream", params=params, headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        decoder = SSEDecoder()
        return [e async for chunk in r.aiter_bytes() for e in decoder.feed(chunk)]


def data(event: SSEEvent) -> Json:
    return dict(json.loads(event.data))


def names(events: list[SSEEvent]) -> list[str | None]:
    return [e.event for e in events]


def assert_numbered(events: list[SSEEvent], first: int = 0) -> None:
    assert [e.id for e in events] == [str(n) for n in range(first, first + len(events))]
    assert [data(e)["sequence_number"] for e in events] == [int(e.id or "") for e in events]


async def test_a_finished_job_replays_all_its_events_then_the_stream_ends(gateway: Running) -> None:
    async with gateway.client() as client:
        job = (await create(client, {"request": REQUEST}, prefer="wait=10")).json()
        assert job["status"] == "succeeded"
        events = await stream_events(client, job["id"])
        again = await stream_events(client, job["id"])
    assert names(events) == ["job.queued", "job.running", "job.succeeded"]
    assert_numbered(events)
    assert [(data(e)["status"], data(e)["attempt"]) for e in events] == [
        ("queued", 0), ("running", 1), ("succeeded", 1)
    ]
    assert all(data(e)["job_id"] == job["id"] for e in events)
    final = data(events[-1])["job"]
    assert final["status"] == "succeeded" and final["result"]["status"] == "completed"
    assert final["result"]["output"][0]["content"][0]["text"] == job["result"]["output"][0]["content"][0]["text"]
    assert final["cost_usd"] == job["cost_usd"]
    assert [(e.id, e.event, e.data) for e in again] == [(e.id, e.event, e.data) for e in events]


async def test_a_live_job_is_watched_from_queued_through_running_to_its_end(gateway: Running) -> None:
    async with gateway.client() as client:
        job_id = (await create(client, {"request": scenario("latency_ms=1200")})).json()["id"]
        seen: list[tuple[str | None, str]] = []  # (event, the job's status when it came)
        async with client.stream("GET", f"/v1/jobs/{job_id}/stream") as r:
            assert r.status_code == 200
            decoder = SSEDecoder()
            async for chunk in r.aiter_bytes():
                for event in decoder.feed(chunk):
                    now = (await client.get(f"/v1/jobs/{job_id}")).json()["status"]
                    seen.append((event.event, now))
    assert [e for e, _ in seen] == ["job.queued", "job.running", "job.succeeded"]
    # the running event came while the job ran (a 1.2 s call), not in a replay at the end
    assert seen[1][1] == "running"
    assert seen[2][1] == "succeeded"


async def test_resuming_sends_only_the_later_events(gateway: Running) -> None:
    async with gateway.client() as client:
        job = (await create(client, {"request": REQUEST}, prefer="wait=10")).json()
        after_first = await stream_events(client, job["id"], last_event_id="0")
        after_second = await stream_events(client, job["id"], starting_after="1")
        query_wins = await stream_events(client, job["id"], last_event_id="0", starting_after="1")
        past_the_end = await stream_events(client, job["id"], last_event_id="2")
    assert names(after_first) == ["job.running", "job.succeeded"]
    assert_numbered(after_first, first=1)
    assert names(after_second) == names(query_wins) == ["job.succeeded"]
    assert past_the_end == []


async def test_a_live_stream_resumed_mid_job_gets_the_rest(gateway: Running) -> None:
    async with gateway.client() as client:
        job_id = (await create(client, {"request": scenario("latency_ms=800")})).json()["id"]
        await until(client, job_id, {"running"})
        rest = await stream_events(client, job_id, last_event_id="1")
    assert names(rest) == ["job.succeeded"] and rest[0].id == "2"


async def test_a_canceled_job_ends_its_stream_canceled(nursery: trio.Nursery, tmp_path: Path) -> None:
    from tests.server.conftest import start_gateway

    gw = await start_gateway(nursery, fast_settings(tmp_path))
    try:
        async with gw.client() as client:
            job_id = (await create(client, {"request": scenario("latency_ms=5000")})).json()["id"]
            got: list[SSEEvent] = []

            async def watch() -> None:
                got.extend(await stream_events(client, job_id))

            async with trio.open_nursery() as inner:
                inner.start_soon(watch)
                await until(client, job_id, {"running"})
                assert (await client.post(f"/v1/jobs/{job_id}/cancel")).status_code == 200
        assert names(got) == ["job.queued", "job.running", "job.canceled"]
        assert data(got[-1])["job"]["status"] == "canceled"
    finally:
        gw.stop.set()


async def test_another_tenants_job_and_a_bad_cursor_are_refused(gateway: Running) -> None:
    other = await gateway.new_key(tenant="t2", project="p9")
    async with gateway.client() as mine, gateway.client(other) as theirs:
        job = (await create(mine, {"request": REQUEST}, prefer="wait=10")).json()
        for job_id in (job["id"], "job_unknown"):
            r = await theirs.get(f"/v1/jobs/{job_id}/stream")
            assert r.status_code == 404 and r.json()["error"]["param"] == "id"
        r = await mine.get(f"/v1/jobs/{job['id']}/stream", headers={"last-event-id": "x"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "Last-Event-ID"
        r = await mine.get(f"/v1/jobs/{job['id']}/stream", params={"starting_after": "-1"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "starting_after"
        r = await mine.get(f"/v1/jobs/{job['id']}/stream", params={"nope": "1"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "nope"


async def test_the_route_is_in_the_openapi_document(gateway: Running) -> None:
    async with gateway.client() as client:
        doc = (await client.get("/openapi.json")).json()
    op = doc["paths"]["/v1/jobs/{id}/stream"]["get"]
    assert "text/event-stream" in op["responses"]["200"]["content"]
    assert {p["name"] for p in op["parameters"]} >= {"id", "starting_after", "Last-Event-ID"}


@pytest.mark.postgres
async def test_on_postgres_a_job_run_by_a_worker_process_is_followed_through_another_gateway(
    postgres_url: str, tmp_path: Path  # noqa: F811
) -> None:
    env = {"DATABASE_URL": postgres_url, "MOCK_MODE": "true", "UMG_CONFIG": config(tmp_path)}
    body = {"request": {**REQUEST, "metadata": {"mock_scenario": "latency_ms=1000"}}}
    async with umg_serve("serve", "--no-workers", "--port", ANY_PORT, env=env) as api:
        url = await api.started()
        made = await trio.run_process(
            [UMG, "keys", "create", "--tenant", "acme", "--project", "web", "--json"],
            env=clean_env(**env), capture_stdout=True, check=True,
        )  # fmt: skip
        headers = {"authorization": f"Bearer {json.loads(made.stdout)['key']}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            job_id = (await client.post("/v1/jobs", json=body)).json()["id"]
            got: list[SSEEvent] = []

            async def watch() -> None:
                got.extend(await stream_events(client, job_id))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await trio.sleep(0.3)
                assert got == []  # queued, no worker yet: the stream stays open
                async with umg_serve("worker", env=env) as worker:
                    await worker_ready(worker)
                    with trio.fail_after(20):
                        while not got:
                            await trio.sleep(0.05)
                    await worker.stopped()
            resumed = await stream_events(client, job_id, last_event_id="1")
        await api.stopped()
    assert names(got) == ["job.queued", "job.running", "job.succeeded"]
    assert_numbered(got)
    assert data(got[-1])["job"]["result"]["status"] == "completed"
    assert names(resumed) == ["job.succeeded"]


async def test_a_response_id_is_not_a_job(gateway: Running) -> None:
    async with gateway.client() as client:
        r = await client.post("/v1/responses", json={"model": "gpt-4.1", "input": "stored"})
        response_id = r.json()["id"]
        await gateway.services.stream_log.flush()  # its stored stream is in the same tables
        r = await client.get(f"/v1/jobs/{response_id}/stream")
    assert r.status_code == 404 and r.json()["error"]["param"] == "id"
