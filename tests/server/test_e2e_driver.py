"""End to end: what the one request driver promises on every surface.

- A budget refused before a stream starts is a 402 JSON error on streaming surfaces too
  (the first grant is taken before the first byte), with its ledger row.
- Request ids: every response says `x-request-id`; a sane client id is echoed, an insane
  one replaced; every error body carries the id the header says.
- SIGTERM: a non-streaming request still running when the drain window ends gets an
  explicit 503, and its ledger row a terminal status (never `in_progress`).
- A grant taken at admission and never used (the run was never driven, or the client
  went away at its first byte) whose release fails on the database still
  gets its one ledger row; the reservation is kept for the reconciler.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from adapters.driver import Ingress
from adapters.storage import open_storage
from adapters.storage.records import UsageRecord
from core.model import GatewayRequest, Message, TextPart
from tests.server.conftest import Running, start_gateway
from tests.server.conftest import test_settings as settings_for

STREAMS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/responses/stream", {"model": "mock-fast", "input": "tell me a long story"}),
    ("/v1/responses", {"model": "mock-fast", "input": "tell me a long story", "stream": True}),
    (
        "/v1/chat/completions",
        {"model": "mock-fast", "stream": True,
         "messages": [{"role": "user", "content": "tell me a long story"}]},
    ),
    (
        "/v1/messages",
        {"model": "mock-fast", "stream": True, "max_tokens": 50,
         "messages": [{"role": "user", "content": "tell me a long story"}]},
    ),
]


async def rows_of(storage: Any, tenant: str = "t1") -> list[UsageRecord]:
    now = datetime.now(UTC)
    rows: list[UsageRecord] = await storage.usage_rows(
        tenant, now - timedelta(days=1), now + timedelta(days=1)
    )
    return rows


@pytest.mark.parametrize(("path", "body"), STREAMS)
async def test_a_budget_refused_before_the_stream_is_a_402_json_error(
    gateway: Running, path: str, body: dict[str, Any]
) -> None:
    key = await gateway.new_key(budget_usd=Decimal("0.0000000001"))  # not even one token
    async with gateway.client(key=key) as client:
        r = await client.post(path, json=body)
    assert r.status_code == 402, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    if path == "/v1/messages":  # Anthropic's shape and name for it
        assert err["type"] == "billing_error"
    else:
        assert err["code"] == "budget_exceeded"
    assert r.json().get("request_id", err.get("request_id")) == r.headers["x-request-id"]
    [row] = [row for row in await rows_of(gateway.services.storage) if row.key_id != ""]
    assert row.status == "budget_exceeded" and row.stream and row.cost == 0


async def test_every_response_says_its_request_id(gateway: Running) -> None:
    ok_body = {"model": "mock-fast", "input": "hi"}
    async with gateway.client() as client:
        ok = await client.post("/v1/responses", json=ok_body)
        mine = await client.post("/v1/responses", json=ok_body, headers={"x-request-id": "trace:ab-12.x_Y"})
        insane = await client.post("/v1/responses", json=ok_body, headers={"x-request-id": "a b<script>"})
        too_long = await client.post("/v1/responses", json=ok_body, headers={"x-request-id": "a" * 129})
        bad = await client.post("/v1/responses", json={"model": "mock-fast"}, headers={"x-request-id": "c-1"})
        missing = await client.get("/v1/nowhere")
        health = await client.get("/healthz")
    assert ok.status_code == 200 and ok.headers["x-request-id"] == ok.json()["gateway"]["request_id"]
    assert mine.headers["x-request-id"] == "trace:ab-12.x_Y"
    for refused in (insane, too_long):
        assert refused.status_code == 200
        assert refused.headers["x-request-id"].startswith("req_")
    assert bad.status_code == 400 and bad.json()["error"]["request_id"] == "c-1"
    assert bad.headers["x-request-id"] == "c-1"
    assert missing.status_code == 404
    assert missing.json()["error"]["request_id"] == missing.headers["x-request-id"]
    assert health.headers["x-request-id"].startswith("req_")
    ids = {r.headers["x-request-id"] for r in (ok, insane, too_long, missing, health)}
    assert len(ids) == 5  # the gateway's own ids are unique
    # a client id reused twice still gets two ledger rows (the ledger keys on the own id)
    async with gateway.client() as client:
        again = await client.post("/v1/responses", json=ok_body, headers={"x-request-id": "trace:ab-12.x_Y"})
    assert again.status_code == 200
    assert len(await rows_of(gateway.services.storage)) == 6


async def test_sigterm_answers_a_running_sync_request_503_and_records_it(tmp_path: Path) -> None:
    drain = 1.0
    async with trio.open_nursery() as nursery:
        gateway = await start_gateway(nursery, settings_for(tmp_path))
        answer: list[httpx.Response] = []

        async def slow() -> None:
            body = {"model": "gpt-4.1", "input": "never in time",
                    "metadata": {"mock_scenario": "latency_ms=30000"}}
            async with gateway.client() as client:
                answer.append(await client.post("/v1/responses", json=body))

        nursery.start_soon(slow)
        with trio.fail_after(10):
            while len(gateway.services.streams) == 0:
                await trio.sleep(0.01)
        signalled = trio.current_time()
        gateway.stop.set()
        with trio.fail_after(60):  # a hang guard: the upstream alone would take 30 s
            while not answer:
                await trio.sleep(0.01)
        answered = trio.current_time() - signalled
    [r] = answer
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "service_unavailable" and "shutting down" in err["message"]
    assert err["request_id"] == r.headers["x-request-id"]
    # not before the drain window ended; and cut by it, before the upstream's 30 s (a
    # bound with room for any load, not a speed check)
    assert drain - 0.2 <= answered < 30, answered

    storage = open_storage(f"sqlite:///{tmp_path}/gateway.db")
    try:
        [row] = await rows_of(storage)
    finally:
        await storage.close()
    assert row.status == "error" and row.error_code == "service_unavailable"
    assert not row.stream and row.attempts == 1


@pytest.mark.parametrize("how", ["never_driven", "gone_at_the_first_byte"])
async def test_a_failed_release_of_an_unused_grant_still_writes_the_row(
    gateway: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """The grant's reservation cannot be released (the database file is locked by another
    process past the busy wait): the run still records exactly one row, the reservation
    waits in `Limits.unsettled` for the reconciler, and the client-gone error is the one
    raised (not the database's)."""
    driver = gateway.services.gateway.driver
    limits = driver.limits
    plain = await gateway.new_key(budget_usd=Decimal(1))  # the grant reserves in a budget

    async def locked(*_: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(limits, "_close_rid", locked)

    async def parse() -> GatewayRequest:
        return GatewayRequest(model="mock-fast", messages=(Message("user", (TextPart("hi"),)),))

    request_id = f"req_release_{how}"
    run = driver.run(Ingress(request_id, "responses", parse, token=plain))
    await run.open()
    assert limits.unsettled == {}
    if how == "never_driven":
        await run.close()
    else:

        async def gone(event: object) -> None:  # the first byte meets a closed connection
            raise trio.BrokenResourceError("the client went away (the test)")

        with pytest.raises(trio.BrokenResourceError):
            await run.drive(gone)
    await run.close()  # idempotent: still one row
    rows = [r for r in await rows_of(gateway.services.storage) if r.request_id == request_id]
    assert len(rows) == 1, rows
    (row,) = rows
    assert row.status == "client_closed" and row.cost == 0, row
    assert list(limits.unsettled) == [f"{request_id}:1"]
    assert not any("ledger row not written" in r.getMessage() for r in caplog.records)



@pytest.mark.parametrize("stream", [False, True])
async def test_a_settle_the_database_refuses_is_a_503_with_its_row(
    gateway: Running, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    """The answer came, then its budget settle failed on the storage's own error (SQLite:
    the file locked past the busy wait): the client gets the 503 the driver promises for
    a settle that could not be made (a JSON error, or the stream's error event), not a
    cut connection and a traceback; the row is written with that status, and its attempt
    log says the attempt was halted (`attempts.Halted`), not still "in_flight"."""
    limits = gateway.services.gateway.driver.limits
    plain = await gateway.new_key(budget_usd=Decimal(1))

    async def locked(*_: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(limits, "_close_rid", locked)
    async with gateway.client(key=plain) as client:
        r = await client.post("/v1/responses", json={"model": "mock-fast", "input": "hi", "stream": stream})
    if stream:
        assert r.status_code == 200 and '"storage_unavailable"' in r.text, r.text[-400:]
        assert "response.completed" not in r.text  # an error event ends it, not a clean end
    else:
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "storage_unavailable"
        assert "locked" not in r.text  # the database's own words stay in the log
    (row,) = [x for x in await rows_of(gateway.services.storage) if x.key_id and x.stream == stream]
    assert (row.status, row.error_code) == ("error", "storage_unavailable"), row
    assert [a["outcome"] for a in row.attempt_log] == ["halted"], row.attempt_log


async def test_a_grant_the_database_refuses_at_admission_is_a_503_with_its_row(
    gateway: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first grant's reservation fails on the storage's own error: the request is
    refused with the 503 (fail closed: no budget, no call) and recorded, like any
    refusal at admission; no traceback reaches the client."""
    storage = gateway.services.storage
    plain = await gateway.new_key(budget_usd=Decimal(1))

    async def locked(*_: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(storage, "update_states", locked)
    async with gateway.client(key=plain) as client:
        r = await client.post("/v1/responses", json={"model": "mock-fast", "input": "hi"})
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "storage_unavailable" and "locked" not in r.text
    monkeypatch.undo()
    (row,) = [x for x in await rows_of(storage) if x.status != "ok"]
    assert (row.status, row.error_code, row.cost) == ("error", "storage_unavailable", 0), row


async def test_a_run_says_its_ledger_row_comes_alone_only_when_no_other_run_is_open(
    gateway: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`insert_usage(alone=...)` (adapters/storage/group_commit.py): True when the run is
    the only one open, so the row may be committed in its own task; False while another
    run is open, so the rows can meet in one batch."""
    driver = gateway.services.gateway.driver
    storage = gateway.services.storage
    plain = await gateway.new_key()
    said: dict[str, bool] = {}
    real = storage.insert_usage

    async def recorded(rec: UsageRecord, *, alone: bool = False) -> bool:
        said[rec.request_id] = alone
        return await real(rec, alone=alone)

    monkeypatch.setattr(storage, "insert_usage", recorded)

    async def parse() -> GatewayRequest:
        return GatewayRequest(model="mock-fast", messages=(Message("user", (TextPart("hi"),)),))

    first = driver.run(Ingress("req_alone_1", "responses", parse, token=plain))
    second = driver.run(Ingress("req_alone_2", "responses", parse, token=plain))
    await first.open()
    await second.open()
    await first.collect()  # the second is still open
    await second.collect()  # now alone
    assert said == {"req_alone_1": False, "req_alone_2": True}
    rows = {r.request_id: r.status for r in await rows_of(storage)}
    assert rows["req_alone_1"] == rows["req_alone_2"] == "ok"
