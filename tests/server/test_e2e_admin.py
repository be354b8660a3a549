"""The admin API end to end, on SQLite and on Postgres: admin keys, keys over HTTP, the
ledger (`/v1/admin/requests`, `/v1/requests`), usage series, provider health, the audit
log, 401/403 for the wrong keys and 400s naming the field.

The real gateway (mock providers) on 127.0.0.1 port 0, called with httpx. Every test runs
on both backends (`backend` fixture; Postgres gets a fresh database per test).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from attrs import define

from adapters.admin import create_key
from server.app import create_app
from tests.adapters.conftest import postgres_url  # noqa: F401  (the fixture)
from tests.server.conftest import Running, start_gateway
from tests.server.conftest import test_settings as settings_for
from tests.server.test_cli import umg


@define
class Admin:
    gw: Running
    key: str  # an admin key (tenant "ops")

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        return self.gw.client(key or self.key)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def admin(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Admin]:
    env = {}
    if request.param == "postgres":
        env["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    async with trio.open_nursery() as nursery:
        running = await start_gateway(nursery, settings_for(tmp_path, **env))
        plain, _ = await create_key(
            running.services.storage, running.services.clock, tenant="ops", project="ops",
            admin=True,
        )
        yield Admin(running, plain)
        running.stop.set()


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def around_now() -> dict[str, str]:
    now = datetime.now(UTC)
    return {"from": rfc3339(now - timedelta(hours=1)), "to": rfc3339(now + timedelta(hours=1))}


async def chat(client: httpx.AsyncClient, text: str = "hello there", **extra: Any) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}
    return await client.post("/v1/chat/completions", json=body)


def error_param(resp: httpx.Response) -> str | None:
    body = resp.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    param: str | None = body["error"]["param"]
    return param


ADMIN_ROUTES = [
    ("POST", "/v1/admin/keys", {"tenant": "a", "project": "b"}),
    ("GET", "/v1/admin/keys", None),
    ("GET", "/v1/admin/keys/{id}", None),
    ("PATCH", "/v1/admin/keys/{id}", {"name": "x"}),
    ("POST", "/v1/admin/keys/{id}/revoke", None),
    ("GET", "/v1/admin/requests", None),
    ("GET", "/v1/admin/providers", None),
]


async def test_tenant_keys_get_403_and_no_key_401_on_every_admin_route(admin: Admin) -> None:
    # Every admin route the app serves is in the list (a new one cannot be left out).
    app = create_app(admin.gw.services)
    served = {(method, re.sub(r"<[^>]+>", "{id}", rule.rule)) for rule in app.url_map.iter_rules()
              if rule.rule.startswith("/v1/admin") for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}}  # fmt: skip
    assert served == {(method, path) for method, path, _ in ADMIN_ROUTES}
    own = await admin.gw.services.storage.list_keys("t1")
    target = own[0].id
    async with admin.client(admin.gw.key) as tenant, httpx.AsyncClient(base_url=admin.gw.url) as anon:
        for method, path, body in ADMIN_ROUTES:
            url = path.format(id=target)
            refused = await tenant.request(method, url, json=body)
            assert refused.status_code == 403, (method, url, refused.text)
            assert refused.json()["error"]["type"] == "permission_error"
            nobody = await anon.request(method, url, json=body)
            assert nobody.status_code == 401, (method, url)
    # nothing was changed by the refused calls
    assert (await admin.gw.services.storage.key_by_id(target)).revoked_at is None  # type: ignore[union-attr]
    assert len(await admin.gw.services.storage.list_keys("a")) == 0


async def test_created_key_is_shown_once_works_and_is_listed_without_secrets(admin: Admin) -> None:
    async with admin.client() as client:
        made = await client.post(
            "/v1/admin/keys",
            json={"tenant": "acme", "project": "web", "name": "web app", "rpm": 100,
                  "tpm": 50000, "budget_usd": "25.50", "budget_period": "day"},
        )
        assert made.status_code == 201, made.text
        body = made.json()
        plain = body["key"]
        assert plain.startswith("umg_live_")
        assert body["tenant"] == "acme" and body["admin"] is False
        assert (body["rpm"], body["tpm"], body["budget_usd"], body["budget_period"]) == (
            100, 50000, "25.5", "day")
        assert body["spend"] == {"period": "day", "limit_usd": "25.5", "spent_usd": "0",
                                 "reserved_usd": "0"}
        one = await client.get(f"/v1/admin/keys/{body['id']}")
        listed = await client.get("/v1/admin/keys")
        only_acme = await client.get("/v1/admin/keys", params={"tenant": "acme"})
    for answer in (one, listed, only_acme):
        assert answer.status_code == 200
        assert plain not in answer.text and "umg_live_" not in answer.text
        assert "secret_hash" not in answer.text
    assert one.json()["id"] == body["id"]
    assert {k["tenant"] for k in listed.json()["data"]} == {"t1", "ops", "acme"}
    assert [k["id"] for k in only_acme.json()["data"]] == [body["id"]]
    async with admin.client(plain) as acme:
        answered = await chat(acme)
        me = await acme.get("/v1/me")
    assert answered.status_code == 200
    assert me.json()["id"] == body["id"] and me.json()["admin"] is False
    spent = Decimal(me.json()["spend"]["spent_usd"])
    assert spent == Decimal(answered.json()["gateway"]["cost_usd"]) > 0


async def test_admin_keys_can_be_made_over_http_and_by_the_cli(admin: Admin, tmp_path: Path) -> None:
    async with admin.client() as client:
        made = await client.post("/v1/admin/keys", json={"tenant": "x", "project": "y", "admin": True})
    assert made.status_code == 201 and made.json()["admin"] is True
    async with admin.client(made.json()["key"]) as other_admin:
        assert (await other_admin.get("/v1/admin/providers")).status_code == 200
    db = f"sqlite:///{tmp_path}/cli.db"
    code, out, _ = await umg(db, "keys", "create", "--tenant", "a", "--project", "b", "--admin", "--json")
    assert code == 0 and json.loads(out)["admin"] is True
    code, out, _ = await umg(db, "keys", "create", "--tenant", "a", "--project", "c", "--json")
    assert code == 0 and json.loads(out)["admin"] is False
    code, out, _ = await umg(db, "keys", "list")
    assert code == 0 and out.count("admin") == 1


async def test_patch_changes_limits_budget_and_name_and_null_clears(admin: Admin) -> None:
    async with admin.client() as client:
        key_id = (await client.post("/v1/admin/keys", json={"tenant": "a", "project": "b", "rpm": 5})).json()["id"]
        patched = await client.patch(
            f"/v1/admin/keys/{key_id}",
            json={"name": "renamed", "rpm": None, "tpm": 1000, "budget_usd": 3, "budget_period": "total"},
        )
        assert patched.status_code == 200, patched.text
        got = (await client.get(f"/v1/admin/keys/{key_id}")).json()
    assert (got["name"], got["rpm"], got["tpm"], got["budget_period"]) == ("renamed", None, 1000, "total")
    assert Decimal(got["budget_usd"]) == 3 and got["spend"]["limit_usd"] == "3"
    stored = await admin.gw.services.storage.key_by_id(key_id)
    assert stored is not None and stored.rpm is None and stored.budget_usd == Decimal(3)


BAD_PATCHES = [
    ({"rpm": 0}, "rpm"),
    ({"tpm": "many"}, "tpm"),
    ({"budget_usd": "-1"}, "budget_usd"),
    ({"budget_usd": "1.00000000001"}, "budget_usd"),
    ({"budget_usd": "lots"}, "budget_usd"),
    ({"budget_usd": True}, "budget_usd"),
    ({"budget_period": "week"}, "budget_period"),
    ({"budget_period": None}, "budget_period"),
    ({"name": 7}, "name"),
    ({"name": "n" * 129}, "name"),
    ({"tenant": "other"}, "tenant"),
    ({"admin": True}, "admin"),
    ({"secret_hash": "x"}, "secret_hash"),
]
BAD_CREATES = [
    ({"project": "b"}, "tenant"),
    ({"tenant": "a"}, "project"),
    ({"tenant": "", "project": "b"}, "tenant"),
    ({"tenant": " a", "project": "b"}, "tenant"),
    ({"tenant": "a", "project": 3}, "project"),
    ({"tenant": "a", "project": "b", "admin": "yes"}, "admin"),
    ({"tenant": "a", "project": "b", "rpm": -3}, "rpm"),
    ({"tenant": "a", "project": "b", "budget_usd": []}, "budget_usd"),
    ({"tenant": "a", "project": "b", "colour": "red"}, "colour"),
]


async def test_bad_input_is_a_400_naming_the_field(admin: Admin) -> None:
    async with admin.client() as client:
        key_id = (await client.post("/v1/admin/keys", json={"tenant": "a", "project": "b"})).json()["id"]
        for body, param in BAD_PATCHES:
            resp = await client.patch(f"/v1/admin/keys/{key_id}", json=body)
            assert resp.status_code == 400, (body, resp.text)
            assert error_param(resp) == param, body
        for body, param in BAD_CREATES:
            resp = await client.post("/v1/admin/keys", json=body)
            assert resp.status_code == 400, (body, resp.text)
            assert error_param(resp) == param, body
        not_json = await client.post("/v1/admin/keys", content=b"{nope", headers={"content-type": "application/json"})
        assert not_json.status_code == 400
        missing = await client.get("/v1/admin/keys/key_nope")
        assert missing.status_code == 404 and error_param(missing) == "id"
        assert (await client.patch("/v1/admin/keys/key_nope", json={"name": "x"})).status_code == 404
        assert (await client.post("/v1/admin/keys/key_nope/revoke")).status_code == 404
        for query, param in [({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"),
                             ({"from": "yesterday"}, "from"), ({"to": "2026-01-01T00:00:00"}, "to"),
                             ({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
                             ({"modle": "x"}, "modle"), ({"model": ""}, "model")]:
            resp = await client.get("/v1/admin/requests", params=query)
            assert resp.status_code == 400, (query, resp.text)
            assert error_param(resp) == param, query
        assert error_param(await client.get("/v1/admin/keys", params={"tennant": "a"})) == "tennant"
    assert len(await admin.gw.services.storage.list_keys("a")) == 1  # no bad create stored


async def test_revoked_key_is_refused_at_once_and_cannot_be_changed(admin: Admin) -> None:
    async with admin.client() as client:
        made = (await client.post("/v1/admin/keys", json={"tenant": "a", "project": "b"})).json()
        async with admin.client(made["key"]) as victim:
            assert (await chat(victim)).status_code == 200
            revoked = await client.post(f"/v1/admin/keys/{made['id']}/revoke")
            assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
            refused = await chat(victim)
        assert refused.status_code == 401
        again = await client.post(f"/v1/admin/keys/{made['id']}/revoke")
        assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
        changed = await client.patch(f"/v1/admin/keys/{made['id']}", json={"rpm": 3})
    assert changed.status_code == 409 and error_param(changed) == "id"


async def test_ledger_lists_filters_and_pages_every_tenant_for_admins(admin: Admin) -> None:
    other = await admin.gw.new_key(tenant="t2", project="p9")
    async with admin.client(admin.gw.key) as t1, admin.client(other) as t2, admin.client() as client:
        costs = [Decimal((await chat(t1, f"one two {i}")).json()["gateway"]["cost_usd"]) for i in range(3)]
        answered = await chat(t2, "three")
        bad = await chat(t2, "x", model="no-such-model")
        assert answered.status_code == 200 and bad.status_code == 404
        everything = (await client.get("/v1/admin/requests", params=around_now())).json()
        t1_rows = (await client.get("/v1/admin/requests", params={"tenant": "t1"})).json()
        by_model = (await client.get("/v1/admin/requests", params={"model": "no-such-model"})).json()
        errors = (await client.get("/v1/admin/requests", params={"status": "error"})).json()
        key_rows = (await client.get("/v1/admin/requests", params={"key_id": answered.json()["gateway"]["request_id"]})).json()
        t2_key = (await admin.gw.services.storage.list_keys("t2"))[0].id
        by_key = (await client.get("/v1/admin/requests", params={"key_id": t2_key})).json()
        by_project = (await client.get("/v1/admin/requests", params={"project": "p9"})).json()
        by_provider = (await client.get("/v1/admin/requests", params={"provider": "openai"})).json()
        long_ago = (await client.get("/v1/admin/requests", params={"from": "2020-01-01T00:00:00Z",
                                                                  "to": "2020-01-02T00:00:00Z"})).json()  # fmt: skip
        pages, after = [], None
        while True:
            query = {"limit": "2", **({"after": after} if after else {})}
            page = (await client.get("/v1/admin/requests", params=query)).json()
            pages.append(page["data"])
            after = page["next_after"]
            if not page["has_more"]:
                break
    assert len(everything["data"]) == 5 and everything["has_more"] is False
    ats = [r["at"] for r in everything["data"]]
    assert ats == sorted(ats, reverse=True)
    assert {r["tenant"] for r in everything["data"]} == {"t1", "t2"}
    assert len(t1_rows["data"]) == 3
    assert sorted(Decimal(r["cost_usd"]) for r in t1_rows["data"]) == sorted(costs)
    assert [r["status"] for r in by_model["data"]] == ["error"] and len(errors["data"]) == 1
    assert key_rows["data"] == []  # a request id is not a key id
    assert len(by_key["data"]) == 2 and {r["key_id"] for r in by_key["data"]} == {t2_key}
    assert {r["tenant"] for r in by_project["data"]} == {"t2"} and len(by_project["data"]) == 2
    assert len(by_provider["data"]) == 4 and {r["provider"] for r in by_provider["data"]} == {"openai"}
    assert long_ago["data"] == []
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [r["id"] for p in pages for r in p] == [r["id"] for r in everything["data"]]
    ok = t1_rows["data"][0]
    assert ok["attempts"] == 1 and len(ok["attempt_log"]) == 1
    assert ok["attempt_log"][0]["outcome"] == "ok" and ok["attempt_log"][0]["deployment"] == ok["deployment"]


async def test_tenant_keys_read_only_their_own_ledger_and_usage(admin: Admin) -> None:
    other = await admin.gw.new_key(tenant="t2", project="p9")
    async with admin.client(admin.gw.key) as t1, admin.client(other) as t2:
        await chat(t1)
        await chat(t2)
        mine = (await t1.get("/v1/requests")).json()
        series = (await t1.get("/v1/usage/series", params={"by": "project"})).json()
        same = await t1.get("/v1/requests", params={"tenant": "t1"})
        foreign = await t1.get("/v1/requests", params={"tenant": "t2"})
        foreign_usage = await t1.get("/v1/usage/series", params={"tenant": "t2"})
    assert [r["tenant"] for r in mine["data"]] == ["t1"]
    assert series["tenant"] == "t1" and series["totals"]["requests"] == 1
    assert {p["group"] for p in series["points"]} == {"p1"}
    assert same.status_code == 200
    for refused in (foreign, foreign_usage):
        assert refused.status_code == 403 and error_param(refused) == "tenant"


async def test_usage_series_sums_cost_and_tokens_per_bucket_and_group(admin: Admin) -> None:
    other = await admin.gw.new_key(tenant="t2", project="p9")
    async with admin.client(admin.gw.key) as t1, admin.client(other) as t2, admin.client() as client:
        answers = [(await chat(t1, "a b c")).json(), (await chat(t2, "d e f g")).json()]
        answers.append((await chat(t2, "h", model="claude-3.5-haiku")).json())
        by_model = (await client.get("/v1/usage/series", params={**around_now(), "by": "model"})).json()
        by_day = (await client.get("/v1/usage/series", params={"bucket": "day", "by": "tenant"})).json()
        bad_bucket = await client.get("/v1/usage/series", params={"bucket": "week"})
        bad_by = await client.get("/v1/usage/series", params={"by": "prompt"})
        too_long = await client.get("/v1/usage/series", params={"from": "2026-01-01T00:00:00Z",
                                                               "to": "2026-03-01T00:00:00Z"})
    total = sum(Decimal(a["gateway"]["cost_usd"]) for a in answers)
    assert Decimal(by_model["totals"]["cost_usd"]) == total
    assert sum(Decimal(p["cost_usd"]) for p in by_model["points"]) == total
    assert by_model["totals"]["requests"] == 3 and by_model["tenant"] is None
    models = {p["group"] for p in by_model["points"]}
    assert models == {"gpt-4o-mini", "claude-3.5-haiku"}
    tokens = sum(a["usage"]["total_tokens"] for a in answers)
    assert by_model["totals"]["total_tokens"] == tokens
    assert all(p["at"].endswith(":00:00Z") for p in by_model["points"])
    lat = by_model["totals"]["latency_ms"]
    assert lat["count"] == 3 and lat["p50"] is not None and lat["p50"] <= lat["p99"]
    assert {p["group"]: p["requests"] for p in by_day["points"]} == {"t1": 1, "t2": 2}
    assert by_day["points"][0]["at"].endswith("T00:00:00Z")
    assert error_param(bad_bucket) == "bucket" and error_param(bad_by) == "by"
    assert too_long.status_code == 400 and error_param(too_long) == "bucket"


async def test_providers_show_each_deployments_health_and_breaker(admin: Admin) -> None:
    async with admin.client(admin.gw.key) as t1, admin.client() as client:
        before = (await client.get("/v1/admin/providers")).json()
        assert (await chat(t1)).status_code == 200
        for _ in range(6):  # every attempt fails with 500: the breaker of the first deployment opens
            await t1.post(
                "/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
                headers={"x-umg-mock-scenario": "fail=500"},
            )
        after = (await client.get("/v1/admin/providers")).json()
    assert before["scope"] == "process" and before["data"]
    assert all(d["circuit"] == "closed" and d["window"] == 0 for d in before["data"])
    seen = [d for d in after["data"] if d["window"] > 0]
    assert seen, after
    opened = [d for d in seen if d["circuit"] == "open"]
    assert opened and all(d["available"] is False and d["cooldown_left_s"] > 0 for d in opened)
    assert all(0 < d["error_rate"] <= 1 for d in opened)
    assert {"deployment", "provider", "model", "latency_ms", "consecutive_failures"} <= set(seen[0])


async def test_every_admin_action_is_logged_without_secrets(
    admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="umg.admin")
    async with admin.client() as client:
        made = (await client.post("/v1/admin/keys", json={"tenant": "a", "project": "b", "budget_usd": "2"})).json()
        await client.patch(f"/v1/admin/keys/{made['id']}", json={"rpm": 7})
        await client.get(f"/v1/admin/keys/{made['id']}")
        await client.get("/v1/admin/keys")
        await client.post(f"/v1/admin/keys/{made['id']}/revoke")
        await client.get("/v1/admin/requests", params={"tenant": "a"})
        await client.get("/v1/admin/providers")
    records = [r for r in caplog.records if r.name == "umg.admin"]
    actions = [getattr(r, "action", None) for r in records]
    assert actions == ["key.create", "key.update", "key.get", "key.list", "key.revoke",
                       "requests.list", "providers.list"]
    actor = (await admin.gw.services.storage.list_keys("ops"))[0].id
    assert all(getattr(r, "actor", None) == actor for r in records)
    assert getattr(records[0], "details", {})["budget_usd"] == "2"
    assert getattr(records[1], "details", {}) == {"rpm": 7}
    from adapters.telemetry import JsonFormatter

    for r in records:
        line = JsonFormatter().format(r)
        assert made["key"] not in line and "umg_live_" not in line
        assert json.loads(line)["target"] in (made["id"], None)


async def test_key_list_reads_every_keys_spend_in_one_storage_query(
    admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with admin.client() as client:
        made = [
            (await client.post("/v1/admin/keys", json={"tenant": "spenders", "project": "p",
                                                       "budget_usd": f"{n + 1}"})).json()
            for n in range(5)
        ]  # fmt: skip
        for key in made[:3]:  # three of them spend something
            async with admin.client(key["key"]) as spender:
                assert (await chat(spender)).status_code == 200
        storage = admin.gw.services.storage
        calls: list[tuple[str, int]] = []
        batched, single = storage.read_states, storage.read_state

        async def read_states(scopes: list[str]) -> Any:
            calls.append(("read_states", len(scopes)))
            return await batched(scopes)

        async def read_state(scope: str) -> Any:
            calls.append(("read_state", 1))
            return await single(scope)

        monkeypatch.setattr(storage, "read_states", read_states)
        monkeypatch.setattr(storage, "read_state", read_state)
        listed = (await client.get("/v1/admin/keys", params={"tenant": "spenders"})).json()["data"]
        monkeypatch.undo()
        # One read for the five budgeted keys, whatever their number.
        assert calls == [("read_states", 5)]
        for key in listed:
            one = (await client.get(f"/v1/admin/keys/{key['id']}")).json()
            assert key["spend"] == one["spend"]  # the same figures as the one-key read
    by_id = {k["id"]: k for k in listed}
    for n, key in enumerate(made):
        spend = by_id[key["id"]]["spend"]
        assert spend["limit_usd"] == f"{n + 1}"
        assert (Decimal(spend["spent_usd"]) > 0) == (n < 3), spend
