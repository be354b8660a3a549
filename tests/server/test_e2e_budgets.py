"""End to end: project and tenant budgets on the real server (SQLite, mock providers).

A request must fit every budget that covers it (its key's, its project's, its tenant's);
the 402 names the one that refused; `GET /v1/usage` reports each with what is left;
budgets come from `umg budgets set` and from `[[budgets]]` in the config file.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from adapters import keys
from adapters.budgets import budget_record
from adapters.config.values import ConfigError
from adapters.storage.records import KeyRecord
from server.cli import main
from tests.server.conftest import Running, start_gateway
from tests.server.conftest import test_settings as settings_for


def ask(**extra: Any) -> dict[str, Any]:
    return {"model": "mock-fast", "input": "tell me about budgets", **extra}


async def set_budget(gw: Running, tenant: str, project: str, limit: str, period: str = "month") -> None:
    rec = budget_record(tenant, project, Decimal(limit), period, gw.services.clock.wall())
    await gw.services.gateway.limits.budgets.put(rec)


async def spend_until_refused(gw: Running, keys: list[str], body: dict[str, Any]) -> list[httpx.Response]:
    """Requests in turn from each key until one is refused; every answer, in order."""
    answers: list[httpx.Response] = []
    for n in range(200):
        async with gw.client(key=keys[n % len(keys)]) as client:
            r = await client.post("/v1/responses", json=body)
        answers.append(r)
        assert r.status_code in (200, 402), r.text
        if r.status_code == 402:
            return answers
    raise AssertionError("the budget never ran out")


async def rows_cost(gw: Running, tenant: str, project: str | None = None) -> Decimal:
    now = datetime.now(UTC)
    rows = await gw.services.storage.usage_rows(tenant, now - timedelta(days=1), now + timedelta(days=1))
    return sum((r.cost for r in rows if project is None or r.project == project), Decimal(0))


async def test_a_project_budget_is_shared_by_its_keys_and_named_when_it_refuses(gateway: Running) -> None:
    await set_budget(gateway, "t1", "p1", "0.00004")
    k1, k2 = await gateway.new_key(), await gateway.new_key()
    other = await gateway.new_key(project="p2")  # another project of the tenant: not covered
    answers = await spend_until_refused(gateway, [k1, k2], ask())
    assert len(answers) > 2  # both keys spent from the one budget
    err = answers[-1].json()["error"]
    assert err["code"] == "budget_exceeded" and err["type"] == "budget_exceeded"
    assert err["message"].startswith("The budget of project 'p1' (tenant 't1', per month) cannot pay")
    spent = await rows_cost(gateway, "t1", "p1")
    assert Decimal(0) < spent <= Decimal("0.00004")
    async with gateway.client(key=other) as client:
        assert (await client.post("/v1/responses", json=ask())).status_code == 200

    async with gateway.client(key=k1) as client:
        usage = (await client.get("/v1/usage")).json()
    (project,) = usage["budgets"]
    assert {k: project[k] for k in ("kind", "tenant", "project", "period", "period_key")} == {
        "kind": "project", "tenant": "t1", "project": "p1", "period": "month",
        "period_key": datetime.now(UTC).strftime("%Y-%m"),
    }
    assert Decimal(project["limit_usd"]) == Decimal("0.00004")
    assert Decimal(project["reserved_usd"]) == 0
    assert Decimal(project["spent_usd"]) == spent
    assert Decimal(project["remaining_usd"]) == Decimal("0.00004") - spent


async def test_a_tenant_budget_covers_every_project_and_the_tightest_budget_refuses(
    gateway: Running,
) -> None:
    await set_budget(gateway, "t1", "", "0.00005", period="total")
    await set_budget(gateway, "t1", "p1", "1")  # roomy: the tenant's budget binds
    keys = [await gateway.new_key(project="p1"), await gateway.new_key(project="p2",
                                                                        budget_usd=Decimal(1))]
    answers = await spend_until_refused(gateway, keys, ask())
    assert answers[-1].json()["error"]["message"].startswith(
        "The budget of tenant 't1' (in total) cannot pay")
    spent = await rows_cost(gateway, "t1")
    assert Decimal(0) < spent <= Decimal("0.00005")
    async with gateway.client(key=keys[1]) as client:
        budgets = (await client.get("/v1/usage")).json()["budgets"]
    assert [(b["kind"], b["period"]) for b in budgets] == [("key", "month"), ("tenant", "total")]
    assert Decimal(budgets[1]["spent_usd"]) == spent  # every project's spending
    assert budgets[1]["period_key"] == "total"
    limits = gateway.services.gateway.limits
    for cover, state in await limits.covering_now(await key_of(gateway, keys[0])):
        assert state.spent + state.reserved <= cover.limit and state.reserved == 0


async def key_of(gw: Running, plain: str) -> KeyRecord:
    prefix = keys.prefix_of(plain)
    assert prefix is not None
    record = await gw.services.storage.key_by_prefix(prefix)
    assert record is not None
    return record


async def test_a_stream_refused_by_a_project_budget_is_a_plain_402(gateway: Running) -> None:
    await set_budget(gateway, "t1", "p1", "0")
    async with gateway.client() as client:
        r = await client.post("/v1/responses", json=ask(stream=True))
        chat = await client.post("/v1/chat/completions", json={
            "model": "mock-fast", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    for answer in (r, chat):
        assert answer.status_code == 402, answer.text
        assert "project 'p1'" in answer.json()["error"]["message"]


@pytest.mark.usefixtures("restored_logging")  # main() points the root logger at capsys's stdout
async def test_budgets_set_by_the_cli_apply_to_a_running_gateway(gateway: Running, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    url = gateway.services.settings.database_url
    code = await trio.to_thread.run_sync(lambda: main([
        "budgets", "set", "--database-url", url, "--tenant", "t1", "--project", "p1",
        "--limit-usd", "0", "--period", "day"]))
    assert code == 0
    assert "t1/p1  0 USD per day" in capsys.readouterr().out
    gateway.services.gateway.limits.budgets.forget("t1")  # else: within BUDGET_CACHE_SECONDS
    async with gateway.client() as client:
        r = await client.post("/v1/responses", json=ask())
    assert r.status_code == 402 and "per day" in r.json()["error"]["message"]
    capsys.readouterr()  # the gateway's request log lines (stdout) are not the CLI's output
    assert await trio.to_thread.run_sync(lambda: main(["budgets", "list", "--json", "--database-url", url])) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(b["tenant"], b["project"], Decimal(b["limit_usd"]), b["period"]) for b in listed] == [
        ("t1", "p1", Decimal(0), "day")]
    delete = ["budgets", "delete", "--database-url", url, "--tenant", "t1", "--project", "p1"]
    assert await trio.to_thread.run_sync(lambda: main(delete)) == 0
    assert await trio.to_thread.run_sync(lambda: main(delete)) == 1
    gateway.services.gateway.limits.budgets.forget("t1")
    async with gateway.client() as client:
        assert (await client.post("/v1/responses", json=ask())).status_code == 200


def test_cli_refuses_a_bad_budget(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    with pytest.raises(SystemExit) as info:
        main(["budgets", "set", "--database-url", url, "--tenant", "t", "--limit-usd", "-1"])
    assert info.value.code == 2
    assert "non-negative" in capsys.readouterr().err


@pytest.fixture
async def configured(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    cfg = tmp_path / "umg.toml"
    cfg.write_text('[[budgets]]\ntenant = "t1"\nproject = "p1"\nlimit_usd = "0"\n'
                   '[[budgets]]\ntenant = "t1"\nlimit_usd = 5\nperiod = "day"\n')
    running = await start_gateway(nursery, settings_for(tmp_path, UMG_CONFIG=str(cfg)))
    yield running
    running.stop.set()


async def test_budgets_in_the_config_file_are_applied_at_start(configured: Running) -> None:
    found = await configured.services.storage.list_budgets("t1")
    assert [(b.project, b.budget_usd, b.budget_period) for b in found] == [
        ("", Decimal(5), "day"), ("p1", Decimal(0), "month")]
    async with configured.client() as client:
        r = await client.post("/v1/responses", json=ask())
    assert r.status_code == 402 and "project 'p1'" in r.json()["error"]["message"]


@pytest.mark.parametrize("entry, complaint", [
    ('tenant = "t1"\nlimit_usd = 1.5', "decimal string"),
    ('tenant = "t1"\nlimit_usd = "1"\nperiod = "week"', "period"),
    ('limit_usd = "1"', "tenant"),
    ('tenant = "t1"\nlimit_usd = "1"\nlimit = 2', "unknown"),
])
def test_bad_budgets_in_the_config_file_are_refused(tmp_path: Path, entry: str, complaint: str) -> None:
    cfg = tmp_path / "umg.toml"
    cfg.write_text(f"[[budgets]]\n{entry}\n")
    with pytest.raises(ConfigError, match=complaint):
        settings_for(tmp_path, UMG_CONFIG=str(cfg))
