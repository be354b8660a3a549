"""End to end: the model catalog API, the usage API, and the one-row-per-request ledger.

The real gateway (mock providers, SQLite) on port 0. Usage totals are checked against
what the answers themselves reported; the ledger is read back through `services.storage`.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import trio

from adapters import keys
from adapters.storage.records import KeyRecord, UsageRecord
from tests.server.conftest import Running

DECIMAL = re.compile(r"^\d+(\.\d+)?$")


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def window() -> dict[str, str]:
    now = datetime.now(UTC)
    return {"from": rfc3339(now - timedelta(hours=1)), "to": rfc3339(now + timedelta(hours=1))}


async def key_record(gateway: Running, plain: str) -> KeyRecord:
    prefix = keys.prefix_of(plain)
    assert prefix is not None
    record = await gateway.services.storage.key_by_prefix(prefix)
    assert record is not None
    return record


async def ledger(gateway: Running, record: KeyRecord) -> list[UsageRecord]:
    now = datetime.now(UTC)
    rows = await gateway.services.storage.usage_rows(
        record.tenant, now - timedelta(days=1), now + timedelta(days=1)
    )
    return [r for r in rows if r.key_id == record.id]


async def ledger_until(
    gateway: Running, record: KeyRecord, count: int, seconds: float = 10.0
) -> list[UsageRecord]:
    """Poll until the key has `count` ledger rows (rows of cut streams land a bit later)."""
    rows: list[UsageRecord] = []
    with trio.move_on_after(seconds):
        while True:
            rows = await ledger(gateway, record)
            if len(rows) >= count:
                # give a stray duplicate the chance to show up before we judge
                await trio.sleep(0.2)
                return await ledger(gateway, record)
            await trio.sleep(0.05)
    raise AssertionError(
        f"expected {count} ledger rows within {seconds} s, got {len(rows)}: {rows}"
    )


# -- /v1/models ----------------------------------------------------------------------------


async def test_models_list_has_every_catalog_model_with_decimal_prices(gateway: Running) -> None:
    catalog = gateway.services.gateway.catalog
    async with gateway.client() as client:
        r = await client.get("/v1/models")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert sorted(ids) == sorted(catalog.models)
    assert len(ids) == len(set(ids))
    for model in body["data"]:
        assert model["object"] == "model"
        assert isinstance(model["created"], int) and model["created"] > 0
        assert isinstance(model["owned_by"], str) and model["owned_by"]
        entry = catalog.models[model["id"]]
        gw = model["gateway"]
        assert gw["providers"] == sorted({d.provider for d in entry.deployments})
        assert len(gw["deployments"]) == len(entry.deployments)
        for shown, d in zip(gw["deployments"], entry.deployments, strict=True):
            assert shown["provider"] == d.provider
            assert shown["upstream_model"] == d.upstream_model
            pricing = shown["pricing"]
            for field in ("input", "output"):
                assert isinstance(pricing[field], str) and DECIMAL.match(pricing[field]), pricing
            assert Decimal(pricing["input"]) == d.price.input
            assert Decimal(pricing["output"]) == d.price.output
            for field in ("cached_input", "cache_write"):
                assert pricing[field] is None or DECIMAL.match(pricing[field]), pricing


async def test_model_by_id_and_by_alias(gateway: Running) -> None:
    async with gateway.client() as client:
        direct = await client.get("/v1/models/claude-sonnet-4")
        alias = await client.get("/v1/models/sonnet")
        dated = await client.get("/v1/models/claude-sonnet-4-20250514")
    for r in (direct, alias, dated):
        assert r.status_code == 200, r.text
        assert r.json()["id"] == "claude-sonnet-4"
        assert r.json()["object"] == "model"
    assert "sonnet" in direct.json()["gateway"]["aliases"]
    assert direct.json() == alias.json()


async def test_unknown_model_is_404(gateway: Running) -> None:
    async with gateway.client() as client:
        r = await client.get("/v1/models/gpt-99-ultra")
        anon = await client.get("/v1/models", headers={"authorization": "Bearer umg_live_wrong"})
    assert r.status_code == 404, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code", "request_id"}
    assert err["code"] == "model_not_found"
    assert "gpt-99-ultra" in err["message"]
    assert anon.status_code == 401


# -- /v1/usage -----------------------------------------------------------------------------


async def run_some(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """A few successful requests on different models and surfaces; their reported usage."""
    seen: list[dict[str, Any]] = []
    for model, text in (
        ("mock-fast", "one two three"),
        ("mock-smart", "four five"),
        ("gpt-4.1", "six"),
    ):
        r = await client.post("/v1/responses", json={"model": model, "input": text})
        assert r.status_code == 200, r.text
        body = r.json()
        seen.append(
            {
                "model": model,
                "provider": body["gateway"]["provider"],
                "input": body["usage"]["input_tokens"],
                "output": body["usage"]["output_tokens"],
                "cost": Decimal(body["gateway"]["cost_usd"]),
            }
        )
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "mock-fast", "messages": [{"role": "user", "content": "seven eight"}]},
    )
    assert r.status_code == 200, r.text
    chat = r.json()
    seen.append(
        {
            "model": "mock-fast",
            "provider": chat["gateway"]["provider"],
            "input": chat["usage"]["prompt_tokens"],
            "output": chat["usage"]["completion_tokens"],
            "cost": Decimal(chat["gateway"]["cost_usd"]),
        }
    )
    return seen


def check_totals(totals: dict[str, Any]) -> None:
    assert isinstance(totals["cost_usd"], str) and DECIMAL.match(totals["cost_usd"]), totals
    assert totals["total_tokens"] == totals["input_tokens"] + totals["output_tokens"]


async def test_usage_totals_equal_the_sum_of_the_answers(gateway: Running) -> None:
    async with gateway.client() as client:
        seen = await run_some(client)
        r = await client.get("/v1/usage", params=window())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "usage"
    assert body["tenant"] == "t1"
    totals = body["totals"]
    check_totals(totals)
    assert totals["requests"] == len(seen)
    assert totals["errors"] == 0
    assert totals["input_tokens"] == sum(s["input"] for s in seen)
    assert totals["output_tokens"] == sum(s["output"] for s in seen)
    assert Decimal(totals["cost_usd"]) == sum((s["cost"] for s in seen), Decimal(0))
    assert Decimal(totals["cost_usd"]) > 0


@pytest.mark.parametrize("dimension", ["model", "provider", "project", "day", "status"])
async def test_usage_group_by(gateway: Running, dimension: str) -> None:
    other_project = await gateway.new_key(tenant="t1", project="p2")
    async with gateway.client() as client:
        seen = await run_some(client)
        r = await client.get("/v1/usage", params={**window(), "group_by": dimension})
    async with gateway.client(key=other_project) as client:
        extra = await client.post("/v1/responses", json={"model": "mock-fast", "input": "nine"})
        assert extra.status_code == 200
        after = await client.get("/v1/usage", params={**window(), "group_by": dimension})
    assert r.status_code == 200, r.text
    assert after.status_code == 200, after.text
    body = r.json()
    assert body["group_by"] == [dimension]
    groups = body["groups"]
    for g in groups:
        assert set(g["key"]) == {dimension}
        check_totals(g)
    # the groups add up to the totals
    assert sum(g["requests"] for g in groups) == body["totals"]["requests"] == len(seen)
    assert sum(Decimal(g["cost_usd"]) for g in groups) == Decimal(body["totals"]["cost_usd"])
    assert sum(g["input_tokens"] for g in groups) == body["totals"]["input_tokens"]
    by_key = {g["key"][dimension]: g for g in groups}
    if dimension == "model":
        expected = Counter(s["model"] for s in seen)
        assert {k: g["requests"] for k, g in by_key.items()} == dict(expected)
        fast_cost = sum((s["cost"] for s in seen if s["model"] == "mock-fast"), Decimal(0))
        assert Decimal(by_key["mock-fast"]["cost_usd"]) == fast_cost
    elif dimension == "provider":
        expected = Counter(s["provider"] for s in seen)
        assert {k: g["requests"] for k, g in by_key.items()} == dict(expected)
    elif dimension == "project":
        assert {k: g["requests"] for k, g in by_key.items()} == {"p1": len(seen)}
        later = {g["key"]["project"]: g["requests"] for g in after.json()["groups"]}
        assert later == {"p1": len(seen), "p2": 1}
    elif dimension == "day":
        today = datetime.now(UTC).date().isoformat()
        yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
        assert set(by_key) <= {today, yesterday}  # a run across midnight may split
    else:
        assert {k: g["requests"] for k, g in by_key.items()} == {"ok": len(seen)}


async def test_usage_groups_by_two_dimensions(gateway: Running) -> None:
    async with gateway.client() as client:
        seen = await run_some(client)
        r = await client.get("/v1/usage", params={**window(), "group_by": "provider,model"})
    assert r.status_code == 200, r.text
    groups = r.json()["groups"]
    pairs = Counter((s["provider"], s["model"]) for s in seen)
    got = {(g["key"]["provider"], g["key"]["model"]): g["requests"] for g in groups}
    assert got == dict(pairs)


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "not-a-date"}, "to"),
        ({"from": "2026-01-01T00:00:00"}, "from"),  # no time zone
        ({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),  # reversed
        ({"group_by": "colour"}, "group_by"),
        ({"group_by": "model,model"}, "group_by"),
    ],
)
async def test_usage_bad_params_are_400_naming_the_param(
    gateway: Running, params: dict[str, str], param: str
) -> None:
    async with gateway.client() as client:
        r = await client.get("/v1/usage", params=params)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code", "request_id"}
    assert err["param"] == param
    named = [param, *params.values()] if param == "group_by" else [param]
    assert any(word in err["message"] for word in named), err["message"]
    assert err["type"] == "invalid_request_error"


async def test_usage_window_wider_than_400_days_is_refused(gateway: Running) -> None:
    async with gateway.client() as client:
        r = await client.get(
            "/v1/usage", params={"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
        )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "from"
    assert "400 days" in r.json()["error"]["message"]


async def test_usage_window_bounds(gateway: Running) -> None:
    async with gateway.client() as client:
        await run_some(client)
        past = datetime.now(UTC) - timedelta(days=2)
        r = await client.get(
            "/v1/usage",
            params={"from": rfc3339(past - timedelta(days=1)), "to": rfc3339(past)},
        )
        offset = await client.get(
            "/v1/usage",
            params={"from": (datetime.now(UTC) - timedelta(hours=1)).astimezone().isoformat()},
        )
    assert r.status_code == 200, r.text
    assert r.json()["totals"]["requests"] == 0
    assert r.json()["groups"] == []
    assert offset.status_code == 200, offset.text  # a numeric offset instead of Z works too
    assert offset.json()["totals"]["requests"] == 4


async def test_usage_is_isolated_per_tenant(gateway: Running) -> None:
    tenant_b = await gateway.new_key(tenant="tenant-b", project="pb")
    async with gateway.client() as client:
        await run_some(client)
        a = await client.get("/v1/usage", params={**window(), "group_by": "project"})
    async with gateway.client(key=tenant_b) as client:
        empty = await client.get("/v1/usage", params={**window(), "group_by": "project"})
        one = await client.post("/v1/responses", json={"model": "mock-fast", "input": "b only"})
        assert one.status_code == 200
        b = await client.get("/v1/usage", params={**window(), "group_by": "project"})
    assert a.json()["totals"]["requests"] == 4
    assert empty.status_code == 200
    assert empty.json()["tenant"] == "tenant-b"
    assert empty.json()["totals"]["requests"] == 0
    assert empty.json()["totals"]["cost_usd"] == "0"
    assert empty.json()["groups"] == []
    body = b.json()
    assert body["totals"]["requests"] == 1
    assert [g["key"] for g in body["groups"]] == [{"project": "pb"}]
    assert Decimal(body["totals"]["cost_usd"]) == Decimal(one.json()["gateway"]["cost_usd"])


# -- the ledger: exactly one row per request ---------------------------------------------


async def test_every_request_gets_exactly_one_ledger_row(gateway: Running) -> None:
    key = await gateway.new_key(rpm=5, budget_usd=Decimal("1"))
    record = await key_record(gateway, key)
    ok_body = {"model": "mock-fast", "input": "hello"}
    async with gateway.client(key=key) as client:
        ok = await client.post("/v1/responses", json=ok_body)
        failed = await client.post(
            "/v1/responses",
            json={**ok_body, "metadata": {"mock_scenario": "fail=500"}},
        )
        bad_json = await client.post(
            "/v1/chat/completions", content=b"{oops", headers={"content-type": "application/json"}
        )
        unknown = await client.post("/v1/responses", json={**ok_body, "model": "no-such-model"})
        streamed = await client.post("/v1/responses", json={**ok_body, "stream": True})
        stream_failed = await client.post(
            "/v1/chat/completions",
            json={
                "model": "mock-fast",
                "stream": True,
                "messages": [{"role": "user", "content": "a b c d e f"}],
                "metadata": {"mock_scenario": "cut_after=2"},
            },
        )
        limited = await client.post("/v1/responses", json=ok_body)  # 6th counted (bad JSON is not)
    assert ok.status_code == 200
    assert failed.status_code == 502, failed.text
    assert bad_json.status_code == 400
    assert unknown.status_code == 404
    assert streamed.status_code == 200 and "response.completed" in streamed.text
    assert stream_failed.status_code == 200 and '"error"' in stream_failed.text
    assert "[DONE]" not in stream_failed.text
    assert limited.status_code == 429

    rows = await ledger_until(gateway, record, 7)
    assert len(rows) == 7, [(r.endpoint, r.status) for r in rows]
    assert len({r.request_id for r in rows}) == 7
    by_outcome = sorted((r.endpoint, r.status, r.error_code, r.stream) for r in rows)
    assert by_outcome == sorted(
        [
            ("responses", "ok", None, False),
            ("responses", "error", "upstream_error", False),
            ("chat.completions", "error", "invalid_json", False),
            ("responses", "error", "model_not_found", False),
            ("responses", "ok", None, True),
            ("chat.completions", "error", "upstream_error", True),
            ("responses", "rate_limited", "rate_limit_exceeded", False),
        ]
    )
    failed_row = next(r for r in rows if r.error_code == "upstream_error" and not r.stream)
    assert failed_row.attempts >= 2  # mock-fast, then its fallback mock-smart
    assert failed_row.cost == 0 and failed_row.output_tokens == 0
    ok_row = next(r for r in rows if r.status == "ok" and not r.stream)
    assert ok_row.cost == Decimal(ok.json()["gateway"]["cost_usd"])
    assert ok_row.provider == "mock" and ok_row.model == "mock-fast"
    cut_row = next(r for r in rows if r.stream and r.status != "ok")
    assert cut_row.output_tokens >= 1  # the two words that reached the client are billed

    async with gateway.client(key=key) as client:
        r = await client.get("/v1/usage", params={**window(), "group_by": "status"})
    statuses = {g["key"]["status"]: g["requests"] for g in r.json()["groups"]}
    assert statuses == {"ok": 2, "error": 4, "rate_limited": 1}
    assert r.json()["totals"]["errors"] == 5


async def test_budget_refusal_is_recorded(gateway: Running) -> None:
    key = await gateway.new_key(budget_usd=Decimal("0.000001"))
    record = await key_record(gateway, key)
    async with gateway.client(key=key) as client:
        r = await client.post(
            "/v1/responses", json={"model": "mock-smart", "input": "a fairly long question " * 5}
        )
    assert r.status_code == 402, r.text
    rows = await ledger_until(gateway, record, 1)
    assert [(x.status, x.error_code, x.cost) for x in rows] == [
        ("budget_exceeded", "budget_exceeded", Decimal(0))
    ]


# /v1/messages is left out: Anthropic's `metadata` allows only `user_id`, so the Mock's
# `chunk_delay_ms` scenario cannot be asked for there and the stream would finish at once.
@pytest.mark.parametrize("path", ["/v1/responses", "/v1/chat/completions"])
async def test_client_disconnect_mid_stream_is_recorded_once(gateway: Running, path: str) -> None:
    key = await gateway.new_key()
    record = await key_record(gateway, key)
    words = " ".join(f"w{i}" for i in range(200))
    body: dict[str, Any] = {
        "model": "mock-fast",
        "stream": True,
        "metadata": {"mock_scenario": "chunk_delay_ms=20"},
    }
    if path == "/v1/responses":
        body["input"] = words
        body["store"] = False  # a stored stream goes on detached (tests/server/test_e2e_resume.py)
    else:
        body["messages"] = [{"role": "user", "content": words}]
    async with gateway.client(key=key) as client:
        async with client.stream("POST", path, json=body) as r:
            assert r.status_code == 200, await r.aread()
            async for chunk in r.aiter_bytes():
                if chunk:
                    break  # leave after the first chunk; closing the stream drops the connection
    rows = await ledger_until(gateway, record, 1)
    assert len(rows) == 1, rows
    row = rows[0]
    assert row.status == "client_closed", row
    assert row.error_code == "client_closed_request"
    assert row.stream is True
    assert row.output_tokens < 200  # it stopped early instead of running to the end
