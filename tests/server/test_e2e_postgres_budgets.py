"""Project and tenant budgets under 64 concurrent streams across two `umg serve`
processes on one Postgres: never overspent.

Two real OS processes share a fresh database (the `postgres_url` fixture). Budgets come
from the config file (`[[budgets]]`), keys from `umg keys create`. Waves of 64 streamed
requests (32 to each process, from keys of two projects) run until a whole wave is
refused. While they run, a watcher reads the budget rows straight from the database:
spent + reserved never exceeds any limit. At the end the ledger agrees with each budget
to the last digit, nothing is still reserved, and every refusal named a budget.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import trio

from tests.adapters.conftest import postgres_url  # noqa: F401  (the fixture)
from tests.server.test_process import ANY_PORT, UMG, clean_env, umg_serve

pytestmark = pytest.mark.postgres

PROJECT_LIMIT = Decimal("0.0002")  # project p1's budget, per month
TENANT_LIMIT = Decimal("0.00035")  # the tenant's, in total: p1 and p2 together
WAVE = 64


def body() -> dict[str, Any]:
    return {"model": "mock-fast", "input": "a streamed answer, please", "stream": True,
            "max_output_tokens": 20, "metadata": {"mock_scenario": "chunk_delay_ms=2"}}


async def new_key(env: dict[str, str], project: str) -> str:
    made = await trio.run_process(
        [UMG, "keys", "create", "--tenant", "acme", "--project", project, "--json"],
        env=clean_env(**env), capture_stdout=True, capture_stderr=True, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr.decode()
    key: str = json.loads(made.stdout)["key"]
    return key


def budget_rows(url: str) -> dict[str, tuple[Decimal, Decimal, Decimal]]:
    """scope -> (limit, spent, reserved), read from the database itself."""
    with psycopg.connect(url, autocommit=True) as conn:
        return budget_rows_on(conn)


def budget_rows_on(conn: psycopg.Connection[Any]) -> dict[str, tuple[Decimal, Decimal, Decimal]]:
    """`budget_rows` on an open connection (the watcher's one, kept for the whole run:
    a new connection every 10 ms cost the loaded machine more than the reads)."""
    rows = conn.execute("SELECT scope, data FROM state WHERE scope LIKE 'budget:%'").fetchall()
    out = {}
    for scope, data in rows:
        if data:
            held = sum((Decimal(a) for _, a in data["reservations"]), Decimal(0))
            out[scope] = (Decimal(data["limit"]), Decimal(data["spent"]), held)
    return out


def ledger_cost(url: str, project: str | None) -> tuple[Decimal, int]:
    sql = "SELECT coalesce(sum(cost), 0), count(*) FROM usage WHERE tenant = 'acme'"
    args: tuple[str, ...] = ()
    if project is not None:
        sql, args = sql + " AND project = %s", (project,)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql, args).fetchone()
    assert row is not None
    return Decimal(row[0]), int(row[1])


async def stream_one(url: str, key: str) -> tuple[int, str]:
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        async with client.stream("POST", "/v1/responses", json=body()) as r:
            text = (await r.aread()).decode()
    return r.status_code, text


async def test_project_and_tenant_budgets_hold_under_64_streams_across_two_processes(
    postgres_url: str, tmp_path: Path,  # noqa: F811
) -> None:
    cfg = tmp_path / "umg.toml"
    cfg.write_text(
        f'[[budgets]]\ntenant = "acme"\nproject = "p1"\nlimit_usd = "{PROJECT_LIMIT}"\n'
        f'[[budgets]]\ntenant = "acme"\nlimit_usd = "{TENANT_LIMIT}"\nperiod = "total"\n'
    )
    env = {"DATABASE_URL": postgres_url, "MOCK_MODE": "true", "UMG_CONFIG": str(cfg)}
    worst: list[tuple[Decimal, Decimal, Decimal]] = []
    statuses: list[int] = []
    refusals: list[str] = []
    async with umg_serve("serve", "--port", ANY_PORT, env=env) as first:
        url_1 = await first.started()
        async with umg_serve("serve", "--port", ANY_PORT, env=env) as second:
            url_2 = await second.started()
            keys = [await new_key(env, "p1"), await new_key(env, "p1"), await new_key(env, "p2")]
            running = True

            async def watch() -> None:
                with psycopg.connect(postgres_url, autocommit=True) as conn:
                    while running:
                        rows = await trio.to_thread.run_sync(budget_rows_on, conn)
                        worst.extend(rows.values())
                        await trio.sleep(0.01)

            async def wave() -> list[tuple[int, str]]:
                answers: list[tuple[int, str]] = [(0, "")] * WAVE

                async def one(i: int) -> None:
                    answers[i] = await stream_one((url_1, url_2)[i % 2], keys[i % 3])

                async with trio.open_nursery() as nursery:
                    for i in range(WAVE):
                        nursery.start_soon(one, i)
                return answers

            # a hang guard, not a speed check: the waves took 117 s at load 8 and over
            # 120 s at load 13 (two processes, 64 streams contending on two budget rows)
            with trio.fail_after(600):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(watch)
                    for _ in range(12):
                        answers = await wave()
                        statuses += [code for code, _ in answers]
                        refusals += [text for code, text in answers if code == 402]
                        if all(code == 402 for code, _ in answers):
                            break
                    running = False
            await second.stopped()
        await first.stopped()
    assert "Traceback" not in first.stderr + second.stderr
    assert set(statuses) == {200, 402}, sorted(set(statuses))
    assert all(code == 402 for code in statuses[-WAVE:])  # both processes: spent
    assert len(worst) > 10  # the watcher saw the rows while the waves ran
    for limit, spent, reserved in worst:
        assert spent + reserved <= limit, (limit, spent, reserved)
    for text in refusals:
        message = json.loads(text)["error"]["message"]
        assert message.startswith(("The budget of project 'p1'", "The budget of tenant 'acme'"))

    rows = budget_rows(postgres_url)
    month = datetime.now(UTC).strftime("%Y-%m")
    project = rows[f"budget:project:acme:p1:{month}"]
    tenant = rows["budget:tenant:acme:total"]
    p1_cost, _ = ledger_cost(postgres_url, "p1")
    all_cost, count = ledger_cost(postgres_url, None)
    assert count == len(statuses)  # one ledger row per request, refused ones too
    assert project == (PROJECT_LIMIT, p1_cost, Decimal(0))
    assert tenant == (TENANT_LIMIT, all_cost, Decimal(0))
    assert Decimal(0) < p1_cost < all_cost <= TENANT_LIMIT
    # the project's budget could not pay for one more worst case, nor the tenant's
    assert PROJECT_LIMIT - p1_cost < Decimal("0.00002") or TENANT_LIMIT - all_cost < Decimal("0.00002")
