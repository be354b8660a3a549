"""Postgres unreachable after start: what needs it fails closed with a 503 and
`Retry-After` in the OpenAI error shape (`storage_unavailable`), never a 500 or a crash,
and the gateway recovers by itself when the database is back.

Two ways the database goes away, both against the real server on 127.0.0.1:
- every connection is terminated (`pg_terminate_backend`) while the database refuses
  new ones (`ALLOW_CONNECTIONS false`), then allows them again;
- the gateway reaches Postgres through a TCP relay in this test, which is shut (its
  port then has nothing listening), then opened again on the same port.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import trio
from psycopg import sql

from tests.adapters.conftest import (
    ADMIN_URL,
    postgres_url,  # noqa: F401  (the fixture)
)
from tests.server.conftest import Running, start_gateway
from tests.server.conftest import test_settings as settings_for

pytestmark = pytest.mark.postgres

# budgets without slices: every budgeted request needs the database (with slices, the
# default, a grant within a slice's hold time needs none: tests/adapters/test_budget_slices.py)
ENV = {"MOCK_MODE": "true", "UMG_DB_POOL_TIMEOUT_SECONDS": "0.5", "UMG_BUDGET_SLICES": "false"}
CHAT = {"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}]}


def ask(**extra: Any) -> dict[str, Any]:
    return {"model": "mock-fast", "input": "is the database there?", **extra}


def assert_503(r: httpx.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["code"] == "storage_unavailable" and err["type"] == "server_error", err
    assert "database" in err["message"] and err["param"] is None
    assert 1 <= int(r.headers["retry-after"]) <= 5


async def answers(gw: Running, key: str) -> list[httpx.Response]:
    """One of each thing that needs the database: a budgeted answer, a stream, usage,
    a job."""
    async with gw.client(key=key, timeout=15) as client:
        return [
            await client.post("/v1/responses", json=ask()),
            await client.post("/v1/chat/completions", json={**CHAT, "stream": True}),
            await client.get("/v1/usage"),
            await client.post("/v1/jobs", json={"request": ask()}),
        ]


async def until_ok(gw: Running, key: str) -> httpx.Response:
    with trio.fail_after(20):
        while True:
            async with gw.client(key=key, timeout=15) as client:
                r = await client.post("/v1/responses", json=ask())
            if r.status_code == 200:
                return r
            assert_503(r)
            await trio.sleep(0.2)


async def check_down_then_back(gw: Running, key: str, down: Any, up: Any) -> None:
    async with gw.client(key=key) as client:
        assert (await client.post("/v1/responses", json=ask())).status_code == 200
    await down()
    for _ in range(2):  # the first meets dead connections, the next an open breaker
        for r in await answers(gw, key):
            assert_503(r)
    await trio.sleep(1.1)  # past the key cache: authentication needs the database too
    for r in await answers(gw, key):
        assert_503(r)
    async with gw.client(key=key) as client:
        assert (await client.get("/healthz")).status_code == 200  # the process is fine
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["storage"] is False
    await up()
    await until_ok(gw, key)
    async with gw.client(key=key) as client:
        assert (await client.get("/readyz")).status_code == 200
        usage = (await client.get("/v1/usage")).json()
    (budget,) = usage["budgets"]
    assert Decimal(budget["reserved_usd"]) >= 0
    assert Decimal(budget["spent_usd"]) + Decimal(budget["reserved_usd"]) <= Decimal(budget["limit_usd"])


def admin(statement: sql.Composable) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(statement)


async def test_terminated_connections_and_a_closed_database_are_503_then_recover(
    postgres_url: str, tmp_path: Path, nursery: trio.Nursery,  # noqa: F811
) -> None:
    name = urlsplit(postgres_url).path.lstrip("/")
    gw = await start_gateway(nursery, settings_for(tmp_path, DATABASE_URL=postgres_url, **ENV))
    key = await gw.new_key(budget_usd=Decimal(1))

    async def down() -> None:
        db = sql.Identifier(name)
        await trio.to_thread.run_sync(admin, sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(db))
        await trio.to_thread.run_sync(admin, sql.SQL(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {}"
        ).format(sql.Literal(name)))

    async def up() -> None:
        db = sql.Identifier(name)
        await trio.to_thread.run_sync(admin, sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(db))

    await check_down_then_back(gw, key, down, up)
    gw.stop.set()


class Relay:
    """A TCP relay to Postgres on a fixed local port that can be shut and reopened."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._scope: trio.CancelScope | None = None

    async def _pipe(self, src: trio.SocketStream, dst: trio.SocketStream) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await dst.aclose()

    async def _client(self, stream: trio.SocketStream) -> None:
        try:
            upstream = await trio.open_tcp_stream(*self.target)
        except OSError:
            await stream.aclose()
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pipe, stream, upstream)
            nursery.start_soon(self._pipe, upstream, stream)

    async def open(self, nursery: trio.Nursery) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        self._scope = trio.CancelScope()

        async def serve() -> None:
            assert self._scope is not None
            with self._scope:
                await trio.serve_listeners(self._client, listeners)

        nursery.start_soon(serve)
        await trio.sleep(0)

    def shut(self) -> None:
        """Close the listener and every relayed connection: nothing listens on the port."""
        assert self._scope is not None
        self._scope.cancel()


@pytest.fixture
async def relay(nursery: trio.Nursery) -> AsyncIterator[Relay]:
    target = urlsplit(ADMIN_URL)
    r = Relay((target.hostname or "127.0.0.1", target.port or 5432))
    await r.open(nursery)
    yield r
    r.shut()


async def test_a_port_with_nothing_listening_is_503_then_recovers(
    postgres_url: str, tmp_path: Path, nursery: trio.Nursery, relay: Relay,  # noqa: F811
) -> None:
    via = urlsplit(postgres_url)._replace(netloc=f"{urlsplit(postgres_url).username}@127.0.0.1:{relay.port}")
    gw = await start_gateway(nursery, settings_for(tmp_path, DATABASE_URL=via.geturl(), **ENV))
    key = await gw.new_key(budget_usd=Decimal(1))

    async def down() -> None:
        relay.shut()
        await trio.sleep(0.05)
        with pytest.raises(OSError):  # really nothing there
            await trio.open_tcp_stream("127.0.0.1", relay.port)

    async def up() -> None:
        await relay.open(nursery)

    await check_down_then_back(gw, key, down, up)
    gw.stop.set()


async def test_a_stream_whose_settle_meets_a_dead_database_ends_with_an_error_event(
    postgres_url: str, tmp_path: Path, nursery: trio.Nursery, relay: Relay,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The answer streamed, then its cost could not be settled: the stream ends with an
    error event (not a clean end), the process keeps serving, the lost row is logged."""
    via = urlsplit(postgres_url)._replace(netloc=f"{urlsplit(postgres_url).username}@127.0.0.1:{relay.port}")
    gw = await start_gateway(nursery, settings_for(tmp_path, DATABASE_URL=via.geturl(), **ENV))
    key = await gw.new_key(budget_usd=Decimal(1))
    body = {**CHAT, "stream": True, "metadata": {"mock_scenario": "chunk_delay_ms=150"}}
    lines: list[str] = []
    async with gw.client(key=key) as client, client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            lines.append(line)
            if line.startswith("data: {") and len(lines) == 1:
                relay.shut()  # the first chunk is out: the database goes away
    data = [line[6:] for line in lines if line.startswith("data: ")]
    assert data[-1] != "[DONE]"
    assert '"storage_unavailable"' in data[-1], data[-3:]
    assert any("ledger row not written" in rec.getMessage() for rec in caplog.records)
    await relay.open(nursery)
    await until_ok(gw, key)
    gw.stop.set()


async def test_job_workers_log_one_line_when_the_database_goes_and_one_when_it_is_back(
    postgres_url: str, tmp_path: Path, nursery: trio.Nursery, relay: Relay,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Idle job and webhook workers polling a database that went away: one clear line (no
    traceback) when it goes, one when it is back, a backoff meanwhile; then jobs run.

    The workers start once the LISTEN connection is in place (server/workers.py), so the
    database goes away only after a job has run: shut before that, the workers never
    start and none can fail (the flake seen once: no failure within 30 s)."""
    caplog.set_level(logging.INFO)
    config = tmp_path / "poll.toml"
    config.write_text("[jobs]\nworkers = 4\npoll_seconds = 0.05\nlisten_poll_seconds = 0.05\n")
    via = urlsplit(postgres_url)._replace(netloc=f"{urlsplit(postgres_url).username}@127.0.0.1:{relay.port}")
    settings = settings_for(tmp_path, DATABASE_URL=via.geturl(), UMG_CONFIG=str(config), **ENV)
    gw = await start_gateway(nursery, settings)
    key = await gw.new_key()
    jobs = gw.services.jobs
    assert jobs is not None
    async with gw.client(key=key, timeout=60) as client:  # the workers are running
        r = await client.post("/v1/jobs", json={"request": ask()}, headers={"prefer": "wait=60"})
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    relay.shut()
    with trio.fail_after(60):  # a hang guard: each of the 6 workers meets the outage
        while jobs.outage.failures < 6:
            await trio.sleep(0.05)
    await trio.sleep(3.0)  # 6 workers polling every 0.05 s: ~360 polls without a backoff
    assert jobs.outage.down
    failed_while_down = jobs.outage.failures
    await relay.open(nursery)
    async with gw.client(key=key, timeout=15) as client:
        with trio.fail_after(30):
            while (r := await client.post("/v1/jobs", json={"request": ask()})).status_code != 202:
                assert_503(r)
                await trio.sleep(0.2)
            job_id = r.json()["id"]
            while (await client.get(f"/v1/jobs/{job_id}")).json()["status"] != "succeeded":
                await trio.sleep(0.1)
    assert not jobs.outage.down
    assert failed_while_down < 80  # they backed off
    lines = [r for r in caplog.records if r.name in ("umg.jobs", "umg.webhooks")]
    went = [r for r in lines if r.getMessage().startswith("database unreachable")]
    back = [r for r in lines if r.getMessage().startswith("database reachable again")]
    assert (len(went), len(back)) == (1, 1), [r.getMessage() for r in lines]
    assert went[0].levelno == logging.ERROR and went[0].created < back[0].created
    assert [r.getMessage() for r in lines if r.exc_info] == []  # no traceback
    gw.stop.set()


async def test_a_reservation_whose_settle_met_the_outage_is_settled_when_the_database_is_back(
    postgres_url: str, tmp_path: Path, nursery: trio.Nursery, relay: Relay,  # noqa: F811
) -> None:
    """A stream's settle fails (the database went away mid-answer): its reservation is
    kept by the process and closed, with the real cost, once the database is back, so
    the budget holds nothing for a request that is over."""
    via = urlsplit(postgres_url)._replace(netloc=f"{urlsplit(postgres_url).username}@127.0.0.1:{relay.port}")
    gw = await start_gateway(nursery, settings_for(tmp_path, DATABASE_URL=via.geturl(), **ENV))
    key = await gw.new_key(budget_usd=Decimal(1))
    await until_ok(gw, key)  # the pool has its connections (a loaded machine may need >0.5 s)
    body = {**CHAT, "stream": True, "metadata": {"mock_scenario": "chunk_delay_ms=150"}}
    async with gw.client(key=key) as client, client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        shut = False
        async for line in r.aiter_lines():  # to the end (its error event)
            if line.startswith("data: {") and not shut:
                relay.shut()  # the first chunk is out: the database goes away
                shut = True
    limits = gw.services.gateway.driver.limits
    with trio.fail_after(10):
        while not limits.unsettled:
            await trio.sleep(0.05)
    await relay.open(nursery)
    with trio.fail_after(30):
        while limits.unsettled:  # the reconciler closes it (every 1 s, doubling)
            await trio.sleep(0.1)
    await until_ok(gw, key)
    async with gw.client(key=key) as client:
        (b,) = (await client.get("/v1/usage")).json()["budgets"]
    assert Decimal(b["reserved_usd"]) == 0
    assert Decimal(b["spent_usd"]) > 0  # both answers' real costs, the stream's too
    gw.stop.set()
