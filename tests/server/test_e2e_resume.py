"""Resumable /v1/responses streams on one gateway (SQLite): ids, cut and resume, buffer, 404/410.

A real gateway on 127.0.0.1 port 0 in mock mode, called with httpx. A "cut" is the client
closing its connection mid-stream (httpx leaves the `stream` block): the run goes on
detached, so a resume gets the rest of the same answer, and the ledger has ONE row, `ok`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from core.sse import SSEDecoder, SSEEvent
from tests.adapters.conftest import postgres_url  # noqa: F401  (the fixture)
from tests.server.conftest import Running, start_gateway
from tests.server.conftest import test_settings as settings_for

Json = dict[str, Any]
SLOW = "output_tokens=40;chunk_delay_ms=15"


def ask(scenario: str = SLOW, **extra: Any) -> Json:
    return {"model": "mock-fast", "input": "resume me", "metadata": {"mock_scenario": scenario}, **extra}


async def events_of(response: httpx.Response) -> AsyncIterator[SSEEvent]:
    decoder = SSEDecoder()
    async for chunk in response.aiter_bytes():
        for event in decoder.feed(chunk):
            yield event


def data(event: SSEEvent) -> Json:
    return dict(json.loads(event.data))


def text_of(events: list[SSEEvent]) -> str:
    return "".join(data(e)["delta"] for e in events if e.event == "response.output_text.delta")


def final_text(events: list[SSEEvent]) -> str:
    done = [data(e) for e in events if e.event == "response.output_text.done"]
    assert len(done) == 1
    return str(done[0]["text"])


async def cut_after(client: httpx.AsyncClient, n: int, body: Json) -> tuple[str, list[SSEEvent]]:
    """Open a stream, read its first `n` events, then close the connection."""
    seen: list[SSEEvent] = []
    async with client.stream("POST", "/v1/responses/stream", json=body) as response:
        assert response.status_code == 200
        async for event in events_of(response):
            seen.append(event)
            if len(seen) == n:
                break
    return str(data(seen[0])["response"]["id"]), seen


async def resume(
    client: httpx.AsyncClient, response_id: str, *, last_event_id: str | None = None, **params: str
) -> list[SSEEvent]:
    headers = {} if last_event_id is None else {"last-event-id": last_event_id}
    async with client.stream(
        "GET", f"/v1/responses/{response_id}", params={"stream": "true", **params}, headers=headers
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        return [e async for e in events_of(response)]


async def ledger_rows(gateway: Running) -> list[Any]:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    return await gateway.services.storage.usage_rows("t1", now - timedelta(hours=1), now + timedelta(hours=1))


async def test_every_stream_event_has_an_id_that_is_its_sequence_number(gateway: Running) -> None:
    async with gateway.client() as client, client.stream(
        "POST", "/v1/responses/stream", json=ask("output_tokens=5")
    ) as response:
        events = [e async for e in events_of(response)]
    assert events[-1].event == "response.completed"
    assert [e.id for e in events] == [str(data(e)["sequence_number"]) for e in events]
    assert [int(e.id or "") for e in events] == list(range(len(events)))


async def test_a_cut_stream_resumed_with_last_event_id_ends_whole_with_one_ledger_row(
    gateway: Running,
) -> None:
    async with gateway.client() as client:
        response_id, first = await cut_after(client, 6, ask())
        rest = await resume(client, response_id, last_event_id=first[-1].id)
    assert rest[0].id == str(int(first[-1].id or "") + 1)  # nothing lost, nothing twice
    everything = first + rest
    assert [int(e.id or "") for e in everything] == list(range(len(everything)))
    assert everything[-1].event == "response.completed"
    assert text_of(everything) == final_text(everything)
    assert len(final_text(everything).split()) >= 40
    rows = await ledger_rows(gateway)
    assert [(r.status, r.endpoint) for r in rows] == [("ok", "responses")]
    assert rows[0].output_tokens > 0


async def test_after_the_end_the_buffer_answers_starting_after_and_the_finished_response(
    gateway: Running,
) -> None:
    async with gateway.client() as client:
        async with client.stream("POST", "/v1/responses/stream", json=ask("output_tokens=8")) as r:
            whole = [e async for e in events_of(r)]
        response_id = data(whole[0])["response"]["id"]
        again = await resume(client, response_id)  # no cursor: from the first event
        tail = await resume(client, response_id, starting_after="3")
        both = await resume(client, response_id, last_event_id="1", starting_after="4")
        finished = await client.get(f"/v1/responses/{response_id}")
    assert [(e.id, e.event, e.data) for e in again] == [(e.id, e.event, e.data) for e in whole]
    assert [e.id for e in tail] == [e.id for e in whole[4:]]
    assert [e.id for e in both] == [e.id for e in whole[5:]]  # starting_after wins
    assert finished.status_code == 200
    body = finished.json()
    assert body["id"] == response_id and body["object"] == "response"
    assert body["status"] == "completed"
    assert body["output"][0]["content"][0]["text"] == final_text(whole)
    assert body == data(whole[-1])["response"]


async def test_another_tenant_and_an_unknown_id_get_404_and_a_bad_cursor_400(gateway: Running) -> None:
    other = await gateway.new_key(tenant="t2")
    async with gateway.client() as client:
        async with client.stream("POST", "/v1/responses/stream", json=ask("output_tokens=3")) as r:
            response_id = data([e async for e in events_of(r)][0])["response"]["id"]
        unknown = await client.get("/v1/responses/resp_000000000000000000000000", params={"stream": "true"})
        bad = await client.get(f"/v1/responses/{response_id}", params={"stream": "true", "starting_after": "x"})
        bad_header = await client.get(
            f"/v1/responses/{response_id}", params={"stream": "true"}, headers={"last-event-id": "-1"}
        )
        bad_param = await client.get(f"/v1/responses/{response_id}", params={"strean": "true"})
    async with gateway.client(other) as client:
        stolen = await client.get(f"/v1/responses/{response_id}", params={"stream": "true"})
        stolen_whole = await client.get(f"/v1/responses/{response_id}")
    for answer in (unknown, stolen, stolen_whole):
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "not_found"
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "starting_after"
    assert bad_header.status_code == 400 and bad_header.json()["error"]["param"] == "Last-Event-ID"
    assert bad_param.status_code == 400 and bad_param.json()["error"]["param"] == "strean"


async def test_store_false_streams_with_ids_but_keeps_nothing(gateway: Running) -> None:
    async with gateway.client() as client:
        async with client.stream(
            "POST", "/v1/responses/stream", json=ask("output_tokens=3", store=False)
        ) as r:
            events = [e async for e in events_of(r)]
        response_id = data(events[0])["response"]["id"]
        gone = await client.get(f"/v1/responses/{response_id}", params={"stream": "true"})
        bad = await client.post("/v1/responses/stream", json=ask("output_tokens=3", store="yes"))
    assert events[-1].event == "response.completed" and events[-1].id is not None
    assert gone.status_code == 404
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "store"


async def test_resume_while_running_is_live_then_ends(gateway: Running) -> None:
    async with gateway.client() as client:
        response_id, first = await cut_after(client, 3, ask("output_tokens=30;chunk_delay_ms=30"))
        during = await client.get(f"/v1/responses/{response_id}")
        rest = await resume(client, response_id, starting_after=first[-1].id or "")
    assert during.status_code == 200 and during.json()["status"] == "in_progress"
    assert rest[-1].event == "response.completed"
    assert text_of(first + rest) == final_text(rest)


@pytest.fixture
async def strict(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    """No detached runs, and buffers kept 0.3 s."""
    cfg = tmp_path / "umg.toml"
    cfg.write_text("[streams]\nmax_detached = 0\nretention_seconds = 0.3\nflush_seconds = 0.02\n")
    running = await start_gateway(nursery, settings_for(tmp_path, UMG_CONFIG=str(cfg)))
    yield running
    running.stop.set()


async def test_with_no_room_to_detach_a_cut_stream_ends_in_its_record_as_client_closed(
    strict: Running,
) -> None:
    async with strict.client() as client:
        response_id, first = await cut_after(client, 4, ask())
        with trio.fail_after(10):
            while not await ledger_rows(strict):
                await trio.sleep(0.01)
        rest = await resume(client, response_id, last_event_id=first[-1].id)
    assert [r.status for r in await ledger_rows(strict)] == ["client_closed"]
    assert [e.event for e in rest][-2:] == ["error", "response.failed"]
    assert data(rest[-2])["code"] == "client_closed_request"


async def test_an_expired_buffer_is_410_until_pruned(strict: Running) -> None:
    async with strict.client() as client:
        async with client.stream("POST", "/v1/responses/stream", json=ask("output_tokens=3")) as r:
            response_id = data([e async for e in events_of(r)][0])["response"]["id"]
        assert (await client.get(f"/v1/responses/{response_id}")).status_code == 200
        await trio.sleep(0.4)
        expired = await client.get(f"/v1/responses/{response_id}", params={"stream": "true"})
        pruned = await strict.services.storage.stream_prune(strict.services.clock.epoch())
        after = await client.get(f"/v1/responses/{response_id}")
    assert expired.status_code == 410
    assert expired.json()["error"]["code"] == "expired"
    assert pruned == 1
    assert after.status_code == 404


# -- two gateways on one Postgres: resume from the other process ----------------------


@pytest.fixture
async def pg_pair(postgres_url: str, tmp_path: Path) -> AsyncIterator[tuple[Running, Running]]:  # noqa: F811
    """Two gateways (own storage and pool each, as two processes) on one fresh database."""
    settings = settings_for(tmp_path, DATABASE_URL=postgres_url)
    async with trio.open_nursery() as nursery:
        a = await start_gateway(nursery, settings)
        b = await start_gateway(nursery, settings)
        assert a.services.storage is not b.services.storage
        yield a, b
        a.stop.set()
        b.stop.set()


@pytest.mark.postgres
async def test_cut_on_one_gateway_resumed_live_on_another_then_from_the_buffer(
    pg_pair: tuple[Running, Running],
) -> None:
    a, b = pg_pair
    async with a.client() as on_a, b.client(a.key) as on_b:
        response_id, first = await cut_after(on_a, 5, ask("output_tokens=40;chunk_delay_ms=20"))
        rest = await resume(on_b, response_id, last_event_id=first[-1].id)  # live, polled
        again = await resume(on_b, response_id, starting_after="2")  # ended: the buffer
        finished = await on_b.get(f"/v1/responses/{response_id}")
        other = await b.new_key(tenant="t2")
        async with b.client(other) as stranger:
            stolen = await stranger.get(f"/v1/responses/{response_id}", params={"stream": "true"})
    everything = first + rest
    assert [int(e.id or "") for e in everything] == list(range(len(everything)))
    assert everything[-1].event == "response.completed"
    assert text_of(everything) == final_text(everything)
    assert [(e.id, e.data) for e in again] == [(e.id, e.data) for e in everything[3:]]
    assert finished.json()["status"] == "completed"
    assert stolen.status_code == 404
    rows = await ledger_rows(a)
    assert [r.status for r in rows] == ["ok"]  # one row, the whole answer's
    assert await b.services.storage.usage_count() == 1


# -- the official openai SDK ----------------------------------------------------------


async def test_the_openai_sdk_resumes_with_retrieve_stream_starting_after(gateway: Running) -> None:
    import openai

    def run() -> tuple[str, list[Any], list[Any], Any]:
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0, timeout=20)
        with client.responses.create(
            model="mock-fast", input="resume me", stream=True,
            metadata={"mock_scenario": "output_tokens=12;chunk_delay_ms=5"},
        ) as stream:  # fmt: skip
            whole = list(stream)
        response_id = whole[0].response.id
        with client.responses.retrieve(response_id, stream=True, starting_after=whole[4].sequence_number) as resumed:
            rest = list(resumed)
        return response_id, whole, rest, client.responses.retrieve(response_id)

    response_id, whole, rest, finished = await trio.to_thread.run_sync(run)
    assert [e.sequence_number for e in rest] == [e.sequence_number for e in whole[5:]]
    assert [e.type for e in rest] == [e.type for e in whole[5:]]
    assert rest[-1].type == "response.completed"
    assert finished.id == response_id and finished.status == "completed"
    assert finished.output_text == rest[-1].response.output_text
    assert len(finished.output_text.split()) >= 12


async def test_a_whole_answer_is_kept_too_and_store_false_is_not(gateway: Running) -> None:
    async with gateway.client() as client:
        answer = await client.post("/v1/responses", json=ask("output_tokens=4"))
        kept = await client.get(f"/v1/responses/{answer.json()['id']}")
        as_stream = await resume(client, answer.json()["id"])
        private = await client.post("/v1/responses", json=ask("output_tokens=4", store=False))
        not_kept = await client.get(f"/v1/responses/{private.json()['id']}")
    assert kept.status_code == 200 and kept.json() == answer.json()
    assert [(e.id, e.event) for e in as_stream] == [("0", "response.completed")]
    assert not_kept.status_code == 404
