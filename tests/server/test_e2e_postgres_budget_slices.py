"""A budget served from per-process slices (adapters/budget_slices.py) by two `umg serve`
processes on one Postgres: run down to refusal by concurrent streams on both, never
overspent, the row equal to the ledger to the last digit, and no budget transaction per
request while the budget is far from its limit.

Two real OS processes share a fresh database. A tenant budget (config file) is large
enough for slices: 64 streams a wave, half to each process, until a whole wave is
refused. A watcher reads the row straight from the database all along: spent plus what
is held (reservations and leases) never exceeds the limit. The budget row's writes are
counted by the database itself (a trigger the test adds on the `state` table): a wave on
the budgeted tenant, far from its limit, writes the row far less than once a request
(without slices it would be twice a request: grant and settle). Counting the row's own
writes, rather than all the database's transactions, leaves out the job pollers and the
ledger batches, whose number moves with the machine's load.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from tests.adapters.conftest import postgres_url  # noqa: F401  (the fixture)
from tests.server.test_e2e_postgres_budgets import stream_one
from tests.server.test_process import ANY_PORT, UMG, clean_env, umg_serve

pytestmark = pytest.mark.postgres

LIMIT = Decimal("0.004")  # the tenant's, in total: about 250 of these streams' real costs
SCOPE = "budget:tenant:acme:total"
WAVE = 64


async def new_key(env: dict[str, str], tenant: str) -> str:
    made = await trio.run_process(
        [UMG, "keys", "create", "--tenant", tenant, "--project", "p", "--json"],
        env=clean_env(**env), capture_stdout=True, capture_stderr=True, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr.decode()
    key: str = json.loads(made.stdout)["key"]
    return key


def budget_row(conn: psycopg.Connection[Any]) -> tuple[Decimal, Decimal, Decimal, int] | None:
    """(spent, reserved, leased, leases) of the tenant's budget row, None before any."""
    got = conn.execute("SELECT data FROM state WHERE scope = %s", (SCOPE,)).fetchone()
    if got is None or not got[0]:
        return None
    data = got[0]
    reserved = sum((Decimal(a) for _, a in data["reservations"]), Decimal(0))
    leases = data.get("leases", [])
    leased = sum((Decimal(a) for _, a, _ in leases), Decimal(0))
    return Decimal(data["spent"]), reserved, leased, len(leases)


COUNT_WRITES = f"""
CREATE TABLE budget_writes (n BIGINT NOT NULL);
INSERT INTO budget_writes VALUES (0);
CREATE FUNCTION count_budget_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN UPDATE budget_writes SET n = n + 1; RETURN NULL; END $$;
CREATE TRIGGER budget_writes AFTER INSERT OR UPDATE ON state
FOR EACH ROW WHEN (NEW.scope = '{SCOPE}') EXECUTE FUNCTION count_budget_write();
"""


def budget_writes(conn: psycopg.Connection[Any]) -> int:
    """How many times the tenant's budget row was written since COUNT_WRITES ran."""
    row = conn.execute("SELECT n FROM budget_writes").fetchone()
    assert row is not None
    return int(row[0])


def ledger(conn: psycopg.Connection[Any]) -> tuple[Decimal, int]:
    row = conn.execute("SELECT coalesce(sum(cost), 0), count(*) FROM usage WHERE tenant = 'acme'").fetchone()
    assert row is not None
    return Decimal(row[0]), int(row[1])


async def test_two_processes_run_a_sliced_budget_down_exactly_without_a_write_per_request(
    postgres_url: str, tmp_path: Path,  # noqa: F811
) -> None:
    cfg = tmp_path / "umg.toml"
    cfg.write_text(f'[[budgets]]\ntenant = "acme"\nlimit_usd = "{LIMIT}"\nperiod = "total"\n')
    env = {"DATABASE_URL": postgres_url, "MOCK_MODE": "true", "UMG_CONFIG": str(cfg)}
    seen: list[tuple[Decimal, Decimal, Decimal, int]] = []
    statuses: list[int] = []
    refusals: list[str] = []
    async with umg_serve("serve", "--port", ANY_PORT, env=env) as first:
        url_1 = await first.started()
        async with umg_serve("serve", "--port", ANY_PORT, env=env) as second:
            url_2 = await second.started()
            free, budgeted = await new_key(env, "other"), await new_key(env, "acme")

            async def wave(key: str) -> list[tuple[int, str]]:
                answers: list[tuple[int, str]] = [(0, "")] * WAVE

                async def one(i: int) -> None:
                    answers[i] = await stream_one((url_1, url_2)[i % 2], key)

                async with trio.open_nursery() as nursery:
                    for i in range(WAVE):
                        nursery.start_soon(one, i)
                return answers

            conn = psycopg.connect(postgres_url, autocommit=True)
            try:
                conn.execute(COUNT_WRITES)  # the gateways made the table at start
                # the budget row's writes in a wave far from the limit (warm: keys and
                # definitions cached by a wave of each tenant before it)
                await wave(free)
                await wave(budgeted)
                spent_before = budget_row(conn)
                assert spent_before is not None and spent_before[0] < LIMIT / 4
                base = budget_writes(conn)
                assert {code for code, _ in await wave(budgeted)} == {200}
                await trio.sleep(2.5)  # the wave's charges reach the row within 2 s
                writes = budget_writes(conn) - base
                far = budget_row(conn)
                assert far is not None and far[0] + far[1] + far[2] < LIMIT / 2  # still far
                # slices: the row is leased, renewed and charged now and then, well under
                # once a request (without them: grant and settle, twice a request)
                assert 0 < writes < WAVE / 2, writes

                running = True

                async def watch() -> None:
                    with psycopg.connect(postgres_url, autocommit=True) as mine:
                        while running:
                            got = await trio.to_thread.run_sync(budget_row, mine)
                            if got is not None:
                                seen.append(got)
                            await trio.sleep(0.01)

                with trio.fail_after(600):  # a hang guard, not a speed check
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(watch)
                        for _ in range(20):
                            answers = await wave(budgeted)
                            statuses.extend(code for code, _ in answers)
                            refusals.extend(text for code, text in answers if code == 402)
                            if all(code == 402 for code, _ in answers):
                                break
                        running = False
            finally:
                conn.close()
            await second.stopped()
        await first.stopped()
    assert "Traceback" not in first.stderr + second.stderr
    assert set(statuses) == {200, 402}, sorted(set(statuses))
    assert all(code == 402 for code in statuses[-WAVE:])  # spent, on both processes
    assert len(seen) > 10
    assert any(leases for *_, leases in seen)  # slices were held while far from the limit
    for spent, reserved, leased, _ in seen:
        assert spent + reserved + leased <= LIMIT, (spent, reserved, leased)
    for text in refusals:
        assert json.loads(text)["error"]["message"].startswith("The budget of tenant 'acme'")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        final = budget_row(conn)
        cost, count = ledger(conn)
    assert count == 2 * WAVE + len(statuses)  # one ledger row per request, refused ones too
    assert final == (cost, Decimal(0), Decimal(0), 0)  # given back at shutdown: exact
    assert Decimal(0) < cost <= LIMIT
    assert LIMIT - cost < Decimal("0.00002")  # it could not pay for one more worst case
