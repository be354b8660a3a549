"""End to end, on SQLite and on Postgres: a client's own `x-request-id` is the same in its
ledger row (`client_request_id`, migration 010), `/v1/admin/requests`, the request's log
line and its span; an id that is not sane (server/requestid.py) is ignored, and the row
then holds none.

The real gateway (mock providers) on 127.0.0.1 port 0, traced into an in-memory exporter,
its log captured as the JSON formatter writes it.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.adapters.conftest import postgres_url  # noqa: F401  (the fixture)
from tests.server.conftest import Running, start_gateway
from tests.server.conftest import test_settings as settings_for
from tests.server.test_e2e_admin import Admin, around_now
from tests.server.test_e2e_telemetry import log_lines, parsed
from tests.server.test_e2e_tracing import attrs, traced

__all__ = ["log_lines"]  # the fixture, re-used


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def traced_admin(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Admin, InMemorySpanExporter]]:
    from adapters.admin import create_key

    env = {}
    if request.param == "postgres":
        env["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    async with trio.open_nursery() as nursery:
        running: Running = await start_gateway(nursery, settings_for(tmp_path, **env))
        exporter = traced(running.services)
        plain, _ = await create_key(
            running.services.storage, running.services.clock, tenant="ops", project="ops", admin=True
        )
        yield Admin(running, plain), exporter
        running.stop.set()


async def chat(client: httpx.AsyncClient, request_id: bytes) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}
    return await client.post("/v1/chat/completions", json=body, headers={"x-request-id": request_id})


async def rows_of(admin: Admin) -> list[dict[str, object]]:
    async with admin.client() as client:
        r = await client.get("/v1/admin/requests", params={**around_now(), "tenant": "t1"})
    assert r.status_code == 200, r.text
    data: list[dict[str, object]] = r.json()["data"]
    return data


async def test_the_clients_id_is_in_the_ledger_row_the_log_line_and_the_span(
    traced_admin: tuple[Admin, InMemorySpanExporter], log_lines: io.StringIO
) -> None:
    admin, exporter = traced_admin
    async with admin.gw.client() as client:
        r = await chat(client, b"order-17:retry.2_a-b")
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "order-17:retry.2_a-b"
    own = r.json()["gateway"]["request_id"]
    assert own.startswith("req_") and own != "order-17:retry.2_a-b"

    (row,) = await admin.gw.services.storage.usage_rows("t1", *_window())
    assert (row.request_id, row.client_request_id) == (own, "order-17:retry.2_a-b")
    (shown,) = await rows_of(admin)
    assert (shown["request_id"], shown["client_request_id"]) == (own, "order-17:retry.2_a-b")
    (line,) = parsed(log_lines, "request")
    assert (line["request_id"], line["client_request_id"]) == (own, "order-17:retry.2_a-b")
    (span,) = [s for s in exporter.get_finished_spans() if s.name.startswith("chat.completions")]
    assert (attrs(span)["umg.request_id"], attrs(span)["umg.client_request_id"]) == (own, "order-17:retry.2_a-b")


@pytest.mark.parametrize("sent", ["has space", "x" * 129, "émoji", ""])
async def test_an_insane_id_is_ignored_and_the_row_holds_none(
    traced_admin: tuple[Admin, InMemorySpanExporter], log_lines: io.StringIO, sent: str
) -> None:
    admin, exporter = traced_admin
    async with admin.gw.client() as client:
        r = await chat(client, sent.encode("utf-8"))
    assert r.status_code == 200, r.text
    own = r.json()["gateway"]["request_id"]
    assert r.headers["x-request-id"] == own
    (row,) = await admin.gw.services.storage.usage_rows("t1", *_window())
    assert (row.request_id, row.client_request_id) == (own, None)
    (shown,) = await rows_of(admin)
    assert shown["client_request_id"] is None
    (line,) = parsed(log_lines, "request")
    assert line["client_request_id"] == own  # the id the client was shown
    (span,) = [s for s in exporter.get_finished_spans() if s.name.startswith("chat.completions")]
    assert "umg.client_request_id" not in attrs(span)


def _window() -> tuple[object, object]:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    return now - timedelta(hours=1), now + timedelta(hours=1)


async def test_requests_and_admin_requests_find_a_row_by_the_clients_id(
    traced_admin: tuple[Admin, InMemorySpanExporter],
) -> None:
    admin, _ = traced_admin
    async with admin.gw.client() as client:
        for sent in (b"order-1", b"order-2", b"", b"order-1"):  # the last: a retry, same id
            r = await chat(client, sent)
            assert r.status_code == 200, r.text
        mine = await client.get("/v1/requests", params={**around_now(), "client_request_id": "order-1"})
        assert mine.status_code == 200, mine.text
        bad = await client.get("/v1/requests", params={"client_request_id": "has space"})
        series = await client.get("/v1/usage/series", params={"client_request_id": "order-1"})
    rows = mine.json()["data"]
    assert [r["client_request_id"] for r in rows] == ["order-1", "order-1"]
    assert rows[0]["at"] >= rows[1]["at"]  # newest first
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "client_request_id")
    # the series sums the rollups, which do not keep the id: an unknown parameter there
    assert (series.status_code, series.json()["error"]["param"]) == (400, "client_request_id")
    async with admin.client() as client:
        found = await client.get(
            "/v1/admin/requests", params={**around_now(), "client_request_id": "order-2"}
        )
        other = await client.get(
            "/v1/admin/requests", params={**around_now(), "client_request_id": "order-2", "tenant": "ops"}
        )
    assert found.status_code == 200, found.text
    (row,) = found.json()["data"]
    assert (row["client_request_id"], row["tenant"]) == ("order-2", "t1")
    assert other.json()["data"] == []  # the tenant filter still holds
