"""Postgres going away with budget slices on (the default): what a slice still serves
during the outage is charged to the budget row once the database is back, exactly.

The database goes away in the two ways of test_e2e_postgres_down.py (the gateway's TCP
relay shut; or every connection terminated while the database refuses new ones) for
3.5 s, while four clients (two streaming) keep asking with a budgeted key (and a tenant
budget), and a slow stream granted before the outage is settled during it. The test reads
the budget row straight from the database (not through the relay) all along. During the
outage a request is either answered (granted and settled in this process's slice, within
its hold; its ledger row cannot be written and is logged) or refused with 503
`storage_unavailable`: never a 500, and the process keeps serving. Once the database is
back the give-back task (every hold) moves what the slice charged to the row, so the row's
`spent` is the sum of the answered requests' costs (`gateway.cost_usd`, exact decimals; a
stream's in its `response.completed`); after shutdown no lease is left, and spent +
reserved + leased never exceeded the limit.

The real clock with short timeouts (pool 0.5 s) and `trio.fail_after` bounds: the waits
here are on real sockets and a real database, which a mock clock would not move. The
slices' hold and the key cache's time (1 s each by default) are set to `WINDOW` on the
running gateway, so that on a loaded machine the outage still starts inside a fresh hold
(with 1 s, a run of the whole suite beside other work once had every outage request
refused: the hold and the key's cache entry had both run out before the first one).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import trio
from psycopg import sql

from tests.adapters.conftest import postgres_url  # noqa: F401  (the fixture)
from tests.server.conftest import start_gateway
from tests.server.conftest import test_settings as settings_for
from tests.server.test_e2e_postgres_down import Relay, admin, ask, assert_503, relay  # noqa: F401

pytestmark = pytest.mark.postgres

ENV = {"MOCK_MODE": "true", "UMG_DB_POOL_TIMEOUT_SECONDS": "0.5"}  # slices on: the default
LIMIT = Decimal(1)  # the key's
TENANT_LIMIT = Decimal(2)
WINDOW = 2.0  # the slices' hold and the key cache's time, set on the running gateway
OUTAGE_SECONDS = WINDOW + 1.5  # past the slice's hold and the key cache: both kinds of answer
CLIENTS = 4


def budget_rows(conn: psycopg.Connection[Any]) -> dict[str, tuple[Decimal, Decimal, Decimal, int]]:
    """scope -> (spent, reserved, leased, leases) of every budget row (a key's own:
    `key:ID:PERIOD`; a project's or tenant's: `budget:...`)."""
    out = {}
    query = "SELECT scope, data FROM state WHERE scope LIKE 'key:%' OR scope LIKE 'budget:%'"
    for scope, data in conn.execute(query):
        reserved = sum((Decimal(a) for _, a in data.get("reservations", [])), Decimal(0))
        leases = data.get("leases", [])
        leased = sum((Decimal(a) for _, a, _ in leases), Decimal(0))
        out[scope] = (Decimal(data["spent"]), reserved, leased, len(leases))
    return out


def written(conn: psycopg.Connection[Any]) -> set[str]:
    return {rid for (rid,) in conn.execute("SELECT request_id FROM usage")}


class Outage:
    """The two ways of test_e2e_postgres_down.py: the relay shut, or every connection
    terminated while the database refuses new ones."""

    def __init__(self, how: str, name: str, via: Relay, nursery: trio.Nursery) -> None:
        self.how, self.name, self.relay, self.nursery = how, name, via, nursery

    async def down(self) -> None:
        if self.how == "relay":
            self.relay.shut()
            return
        db = sql.Identifier(self.name)
        await trio.to_thread.run_sync(admin, sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(db))
        await trio.to_thread.run_sync(admin, sql.SQL(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {}"
        ).format(sql.Literal(self.name)))

    async def up(self) -> None:
        if self.how == "relay":
            await self.relay.open(self.nursery)  # outlives the test body, as the fixture's
            return
        db = sql.Identifier(self.name)
        await trio.to_thread.run_sync(admin, sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(db))


@pytest.mark.parametrize("how", ["relay", "terminated"])
async def test_what_a_slice_served_during_an_outage_reaches_the_row_when_the_database_is_back(
    how: str, postgres_url: str, tmp_path: Path, nursery: trio.Nursery, relay: Relay,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = urlsplit(postgres_url)
    via = url._replace(netloc=f"{url.username}@127.0.0.1:{relay.port}") if how == "relay" else url
    cfg = tmp_path / "umg.toml"  # a tenant budget too: a grant and a give-back cover two rows
    cfg.write_text(f'[[budgets]]\ntenant = "t1"\nlimit_usd = "{TENANT_LIMIT}"\nperiod = "total"\n')
    settings = settings_for(tmp_path, DATABASE_URL=via.geturl(), UMG_CONFIG=str(cfg), **ENV)
    outage = Outage(how, url.path.lstrip("/"), relay, nursery)
    answered: dict[str, Decimal] = {}  # request id -> cost, every 200
    in_outage: list[str] = []  # request ids answered while the database was away
    statuses: list[int] = []
    seen: list[tuple[str, tuple[Decimal, Decimal, Decimal, int]]] = []
    watching = True

    async def one(client: httpx.AsyncClient, stream: bool = False) -> tuple[int, str | None]:
        """A budgeted answer (a streamed one: its cost from `response.completed`)."""
        async with client.stream("POST", "/v1/responses", json=ask(stream=stream)) as r:
            await r.aread()
        if r.status_code != 200:
            assert_503(r)
            return r.status_code, None
        if stream:
            events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
            assert events[-1]["type"] == "response.completed", events[-1]  # settled: no error event
            info = events[-1]["response"]["gateway"]
        else:
            info = r.json()["gateway"]
        answered[info["request_id"]] = Decimal(info["cost_usd"])
        return 200, info["request_id"]

    async def watch() -> None:
        """The rows straight from the database (not through the relay); while it refuses
        connections nobody can change them, so a failed read is skipped."""
        while watching:
            try:
                with psycopg.connect(postgres_url, autocommit=True) as conn:
                    while watching:
                        rows = await trio.to_thread.run_sync(budget_rows, conn)
                        seen.extend(rows.items())
                        await trio.sleep(0.02)
            except psycopg.OperationalError:
                await trio.sleep(0.05)

    with trio.fail_after(40):  # a hang guard, not a speed check
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as inner:  # the gateway: ends with its shutdown
                gw = await start_gateway(inner, settings)
                outer.start_soon(watch)  # the tables are there
                key = await gw.new_key(budget_usd=LIMIT)
                slices = gw.services.gateway.driver.limits.budget_slices
                assert slices is not None  # the default
                slices.hold_seconds = WINDOW
                gw.services.storage.keys.ttl = WINDOW
                async with gw.client(key=key, timeout=10) as client:
                    for _ in range(5):  # warm: key cached, slices leased
                        assert (await one(client))[0] == 200
                    assert slices.leases < 5  # served from a slice, not a row per request
                    with psycopg.connect(postgres_url, autocommit=True) as conn:
                        # the give-back task returns the idle slices whole (<= 2 s); the next
                        # request leases anew, so the outage starts early in a full 1 s hold
                        while any(r[3] for r in (await trio.to_thread.run_sync(budget_rows, conn)).values()):
                            await trio.sleep(0.05)
                    assert (await one(client))[0] == 200

                    first_chunk = trio.Event()

                    async def slow() -> None:
                        """Granted before the outage, settled during it (in the slice)."""
                        body = ask(stream=True, metadata={"mock_scenario": "chunk_delay_ms=150"})
                        async with client.stream("POST", "/v1/responses", json=body) as r:
                            assert r.status_code == 200
                            events = []
                            async for line in r.aiter_lines():
                                if line.startswith("data: {"):
                                    events.append(json.loads(line[6:]))
                                    first_chunk.set()
                        assert events[-1]["type"] == "response.completed", events[-1]
                        info = events[-1]["response"]["gateway"]
                        answered[info["request_id"]] = Decimal(info["cost_usd"])
                        in_outage.append(info["request_id"])

                    ends = trio.current_time() + 3600.0  # set when the database goes

                    async def keep_asking(stream: bool) -> None:
                        while trio.current_time() < ends:
                            status, rid = await one(client, stream)
                            statuses.append(status)
                            if rid is not None:
                                in_outage.append(rid)
                            await trio.sleep(0.01)

                    async with trio.open_nursery() as askers:
                        askers.start_soon(slow)
                        await first_chunk.wait()
                        await outage.down()  # the slow stream's first chunk is out
                        ends = trio.current_time() + OUTAGE_SECONDS
                        for i in range(CLIENTS):
                            askers.start_soon(keep_asking, i % 2 == 1)  # half of them streams
                    assert (await client.get("/healthz")).status_code == 200  # the process is fine

                    await outage.up()
                    while (await one(client))[0] != 200:
                        await trio.sleep(0.1)
                    expected = sum(answered.values(), Decimal(0))
                    with psycopg.connect(postgres_url, autocommit=True) as conn:
                        # the give-back task moves the slice's charges (every hold; two at most)
                        with trio.move_on_after(2 * WINDOW + 3):
                            while True:
                                rows = await trio.to_thread.run_sync(budget_rows, conn)
                                if all(r[0] == expected for r in rows.values()):
                                    break
                                assert all(r[0] <= expected for r in rows.values()), (rows, expected)
                                await trio.sleep(0.1)
                    assert [r[0] for r in rows.values()] == [expected] * 2, (rows, expected, len(in_outage))
                gw.stop.set()
            watching = False

    assert set(statuses) == {200, 503}, statuses  # the slice served some, then not
    assert in_outage
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        rows = budget_rows(conn)
        rows_in = written(conn)
    assert list(rows.values()) == [(expected, Decimal(0), Decimal(0), 0)] * 2  # exact; no lease left
    assert len(seen) > 10
    for scope, (spent, reserved, leased, _) in seen:
        limit = TENANT_LIMIT if scope.startswith("budget:tenant:") else LIMIT
        assert spent + reserved + leased <= limit, (scope, spent, reserved, leased)
    lost = set(in_outage) - rows_in  # answered, ledger row not written: each one logged
    logged = [r.getMessage() for r in caplog.records if "ledger row not written" in r.getMessage()]
    for rid in lost:
        assert any(f"request_id={rid} " in line for line in logged), rid
    assert "Traceback" not in caplog.text
