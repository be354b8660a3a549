"""Scale-out on Postgres: limits, budgets, jobs, usage and revocation hold across gateways.

The product promise is "limits that hold across many gateway processes". Each test here
runs TWO gateways on ONE fresh Postgres database (the `postgres_url` fixture: created per
test, dropped afterwards; it fails instead of skipping when `CI` is set). Each gateway is
built by its own `build_services`, so each has its own storage object and connection pool,
as two processes would; nothing is shared between them but the database. The last test
runs two real `umg serve` OS processes.

Mock mode; HTTP over 127.0.0.1 with httpx.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from attrs import frozen

from adapters import keys
from adapters.storage import open_storage
from adapters.storage.base import Storage
from adapters.storage.keycache import KEY_CACHE_SECONDS
from adapters.storage.records import JobRecord, KeyRecord, UsageRecord
from core import ratelimit
from tests.adapters.conftest import postgres_url  # noqa: F401  (the fixture)
from tests.server.conftest import Running, start_gateway
from tests.server.conftest import test_settings as settings_for
from tests.server.test_process import ANY_PORT, UMG, clean_env, umg_serve

pytestmark = pytest.mark.postgres

DEADLINE = 20.0


@frozen
class Pair:
    a: Running
    b: Running

    @property
    def both(self) -> tuple[Running, Running]:
        return (self.a, self.b)


@pytest.fixture
async def pair(postgres_url: str, tmp_path: Path) -> AsyncIterator[Pair]:  # noqa: F811
    """Two gateways (2 job workers each, 0.1 s polls) on one fresh Postgres database.

    They run in this fixture's own nursery, so both have shut down (and closed their
    connection pools) before the database is dropped."""
    cfg = tmp_path / "umg.toml"
    cfg.write_text("[jobs]\nworkers = 2\npoll_seconds = 0.1\n")
    settings = settings_for(tmp_path, DATABASE_URL=postgres_url, UMG_CONFIG=str(cfg))
    async with trio.open_nursery() as nursery:
        a = await start_gateway(nursery, settings)  # migrates the empty database
        b = await start_gateway(nursery, settings)
        assert a.services.storage is not b.services.storage
        assert a.url != b.url
        yield Pair(a, b)
        a.stop.set()
        b.stop.set()


def ask(latency_ms: int = 0, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "mock-fast", "input": "hello from many gateways", **extra}
    if latency_ms:
        body["metadata"] = {"mock_scenario": f"latency_ms={latency_ms}"}
    return body


async def key_record(storage: Storage, plain: str) -> KeyRecord:
    prefix = keys.prefix_of(plain)
    assert prefix is not None
    record = await storage.key_by_prefix(prefix)
    assert record is not None
    return record


async def ledger(storage: Storage, tenant: str = "t1") -> list[UsageRecord]:
    now = datetime.now(UTC)
    return await storage.usage_rows(tenant, now - timedelta(days=1), now + timedelta(days=1))


def window() -> dict[str, str]:
    """A usage window around now, fixed once so both gateways are asked the same thing."""
    now = datetime.now(UTC).replace(microsecond=0)
    return {
        "from": (now - timedelta(days=1)).isoformat().replace("+00:00", "Z"),
        "to": (now + timedelta(days=1)).isoformat().replace("+00:00", "Z"),
    }


async def post_all(
    targets: list[tuple[Running, str]], body: dict[str, Any], path: str = "/v1/responses"
) -> list[httpx.Response]:
    """POST `body` to every (gateway, key) at once; answers in the order of `targets`."""
    answers: list[httpx.Response | None] = [None] * len(targets)

    async def one(i: int, gw: Running, key: str) -> None:
        async with gw.client(key=key) as client:
            answers[i] = await client.post(path, json=body)

    async with trio.open_nursery() as nursery:
        for i, (gw, key) in enumerate(targets):
            nursery.start_soon(one, i, gw, key)
    assert all(r is not None for r in answers)
    return [r for r in answers if r is not None]


# -- requests per minute ---------------------------------------------------------------------


async def test_rpm_is_shared_by_both_gateways_taken_in_turns(pair: Pair) -> None:
    key = await pair.a.new_key(rpm=4)
    answers: list[httpx.Response] = []
    for i in range(6):
        gw = pair.both[i % 2]
        async with gw.client(key=key) as client:
            answers.append(await client.post("/v1/responses", json=ask()))
    assert [r.status_code for r in answers] == [200] * 4 + [429] * 2, [r.text for r in answers]
    # one bucket: the remaining count goes down across both gateways
    assert [r.headers["x-ratelimit-remaining-requests"] for r in answers[:4]] == ["3", "2", "1", "0"]
    for refused in answers[4:]:
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(refused.headers["retry-after"]) <= 15  # 4/min: one every 15 s
        assert refused.headers["x-ratelimit-limit-requests"] == "4"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert refused.headers["x-ratelimit-reset-requests"].endswith("s")


async def test_rpm_holds_when_both_gateways_are_hammered_at_once(pair: Pair) -> None:
    key = await pair.a.new_key(rpm=4)
    record = await key_record(pair.b.services.storage, key)
    targets = [(pair.both[i % 2], key) for i in range(12)]
    answers = await post_all(targets, ask(latency_ms=50))
    codes = [r.status_code for r in answers]
    assert sorted(codes) == [200] * 4 + [429] * 8, [r.text for r in answers]
    for r in answers:
        assert r.headers["x-ratelimit-limit-requests"] == "4"
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
    # after the race, neither gateway lets another request through
    late = await post_all([(pair.a, key), (pair.b, key)], ask())
    assert [r.status_code for r in late] == [429, 429]
    rows = [r for r in await ledger(pair.a.services.storage) if r.key_id == record.id]
    assert sorted(r.status for r in rows) == ["ok"] * 4 + ["rate_limited"] * 10


async def test_a_larger_rpm_is_served_from_leased_slices_and_still_holds(pair: Pair) -> None:
    """rpm 64: each gateway leases slices of the shared bucket (adapters/leases.py) and
    admits most requests from them without a round trip; together they admit no more
    than the one bucket allows (64, plus what it refills while the test runs)."""
    key = await pair.a.new_key(rpm=64)
    record = await key_record(pair.b.services.storage, key)
    started = trio.current_time()
    # 96 at once on two fresh gateways: the misses in each wait for the lease in flight
    # there (single-flight) instead of each making a lease of their own
    answers = await post_all([(pair.both[i % 2], key) for i in range(96)], ask())
    elapsed = trio.current_time() - started
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 429}, [r.text for r in answers if r.status_code not in (200, 429)]
    refill = math.ceil(elapsed * 64 / 60)
    assert codes.count(200) <= 64 + refill
    # nothing lost: what was not admitted is still held in a gateway's slice or in the row
    held = sum(gw.services.gateway.limits.rate_held(record, "requests") for gw in pair.both)
    state = await pair.a.services.storage.read_state(f"rl:{record.id}")
    assert state is not None
    left = ratelimit.buckets_from_dict(state)["requests"].level
    assert codes.count(200) + held + left >= 64 - 1e-6
    assert codes.count(200) + held <= 64 + refill
    assert codes.count(200) > 0
    leases = sum(gw.services.gateway.limits.rate_leases for gw in pair.both)
    assert leases < len(answers)  # fewer transactions than requests
    rows = [r for r in await ledger(pair.a.services.storage) if r.key_id == record.id]
    assert len(rows) == 96
    assert sum(r.status == "ok" for r in rows) == codes.count(200)


async def test_token_refusals_on_both_gateways_cost_no_request_quota(pair: Pair) -> None:
    """Requests the shared tokens bucket refuses, racing through both gateways, give
    their request back: the requests bucket ends as the two successes left it."""
    key = await pair.a.new_key(rpm=10, tpm=200)
    big = ask(max_output_tokens=150, metadata={"mock_scenario": "output_tokens=150"})
    first = await post_all([(pair.a, key)], big)
    assert first[0].status_code == 200, first[0].text
    refused = await post_all([(pair.both[i % 2], key) for i in range(8)], big)
    assert [r.status_code for r in refused] == [429] * 8, [r.text for r in refused]
    assert all("tokens per minute" in r.json()["error"]["message"] for r in refused)
    [small] = await post_all([(pair.b, key)], ask(max_output_tokens=1))
    assert small.status_code == 200, small.text
    # 10 per minute, two taken (refill in the test's second or so adds at most one back)
    assert small.headers["x-ratelimit-remaining-requests"] in ("8", "9")


# -- budgets -------------------------------------------------------------------------------


async def test_budget_never_overspends_when_both_gateways_race(pair: Pair) -> None:
    budget = Decimal("0.00005")  # about six of these requests' worst cases
    key = await pair.b.new_key(budget_usd=budget)
    record = await key_record(pair.a.services.storage, key)
    body = ask(latency_ms=30, max_output_tokens=20)
    codes: list[int] = []
    with trio.fail_after(DEADLINE):
        while True:  # waves of 10 concurrent requests, half to each gateway
            wave = await post_all([(pair.both[i % 2], key) for i in range(10)], body)
            codes += [r.status_code for r in wave]
            assert {r.status_code for r in wave} <= {200, 402}, [r.text for r in wave]
            if all(r.status_code == 402 for r in wave):
                break
    assert 200 in codes and 402 in codes
    # spent: both gateways now refuse, and say why
    for gw in pair.both:
        async with gw.client(key=key) as client:
            r = await client.post("/v1/responses", json=body)
        assert r.status_code == 402, r.text
        assert r.json()["error"]["code"] == "budget_exceeded"

    rows = [r for r in await ledger(pair.a.services.storage) if r.key_id == record.id]
    assert len(rows) == len(codes) + 2
    spent = sum((r.cost for r in rows), Decimal(0))
    assert Decimal(0) < spent <= budget
    assert sum(r.status == "ok" for r in rows) == codes.count(200)
    assert all(r.cost == 0 for r in rows if r.status == "budget_exceeded")
    for gw in pair.both:  # the one shared budget row agrees with the ledger
        state = await gw.services.gateway.limits.key_budget(record)
        assert state is not None
        assert state.spent == spent and state.reserved == 0


# -- jobs ------------------------------------------------------------------------------------


async def test_jobs_created_on_one_gateway_run_exactly_once_across_both(pair: Pair) -> None:
    claims: dict[str, list[str]] = {"a": [], "b": []}

    def spy(storage: Storage, label: str) -> None:
        claim = storage.claim_job

        async def claim_job(*args: Any, **kwargs: Any) -> JobRecord | None:
            job = await claim(*args, **kwargs)
            if job is not None:
                claims[label].append(job.id)
            return job

        setattr(storage, "claim_job", claim_job)  # noqa: B010  (an instance-level spy)

    spy(pair.a.services.storage, "a")
    spy(pair.b.services.storage, "b")
    body = {"request": ask(latency_ms=150)}
    async with pair.a.client() as client:
        ids = []
        for _ in range(10):
            r = await client.post("/v1/jobs", json=body)
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])

    done: dict[str, dict[str, Any]] = {}
    async with pair.b.client() as client:  # read them back through the other gateway
        with trio.fail_after(DEADLINE):
            while len(done) < len(ids):
                for job_id in ids:
                    if job_id not in done:
                        r = await client.get(f"/v1/jobs/{job_id}")
                        assert r.status_code == 200, r.text
                        if r.json()["status"] not in ("queued", "running"):
                            done[job_id] = r.json()
                await trio.sleep(0.05)

    assert {j["status"] for j in done.values()} == {"succeeded"}, done
    assert all(j["attempts"] == 1 for j in done.values())
    # each job was claimed once, in all; both gateways' workers took part
    assert sorted(claims["a"] + claims["b"]) == sorted(ids), claims
    assert claims["a"] and claims["b"], claims
    # one ledger row per job: the row of the request its result names
    rows = [r for r in await ledger(pair.a.services.storage) if r.endpoint == "jobs"]
    assert len(rows) == len(ids)
    assert {r.request_id for r in rows} == {j["result"]["gateway"]["request_id"] for j in done.values()}
    assert all(r.status == "ok" for r in rows)

    # the usage API agrees on both gateways, and with the ledger
    seen = []
    params = window()
    for gw in pair.both:
        async with gw.client() as client:
            r = await client.get("/v1/usage", params=params)
        assert r.status_code == 200, r.text
        seen.append(r.json())
    assert seen[0] == seen[1]
    totals = seen[0]["totals"]
    assert totals["requests"] == len(await ledger(pair.b.services.storage)) == len(ids)
    assert Decimal(totals["cost_usd"]) == sum((r.cost for r in rows), Decimal(0)) > 0


async def test_usage_is_the_same_on_both_gateways(pair: Pair) -> None:
    for gw, text in ((pair.a, "one"), (pair.b, "two two"), (pair.a, "three three three")):
        async with gw.client() as client:
            r = await client.post("/v1/responses", json={"model": "mock-fast", "input": text})
            assert r.status_code == 200, r.text
    params = {**window(), "group_by": "model,status"}
    seen = []
    for gw in pair.both:
        async with gw.client() as client:
            r = await client.get("/v1/usage", params=params)
        assert r.status_code == 200, r.text
        seen.append(r.json())
    assert seen[0] == seen[1]
    assert seen[0]["totals"]["requests"] == 3
    rows = await ledger(pair.a.services.storage)
    assert seen[0]["totals"]["input_tokens"] == sum(r.input_tokens for r in rows)
    assert seen[0]["totals"]["output_tokens"] == sum(r.output_tokens for r in rows)


# -- keys ------------------------------------------------------------------------------------


async def test_key_revoked_through_one_gateway_is_refused_by_the_other(pair: Pair) -> None:
    key = await pair.a.new_key()
    record = await key_record(pair.a.services.storage, key)
    async with pair.b.client(key=key) as client:
        before = await client.post("/v1/responses", json=ask())
        assert before.status_code == 200, before.text
        revoked = await pair.a.services.storage.revoke_key(record.id, datetime.now(UTC))
        assert revoked is not None and revoked.revoked_at is not None
        # b caches key lookups for KEY_CACHE_SECONDS: the revoke applies there within it
        with trio.fail_after(KEY_CACHE_SECONDS + 20):
            while (after := await client.post("/v1/responses", json=ask())).status_code == 200:
                await trio.sleep(0.1)
        models = await client.get("/v1/models")
    assert after.status_code == 401, after.text
    assert "revoked" in after.json()["error"]["message"]
    assert models.status_code == 401


# -- two real processes ----------------------------------------------------------------------


async def test_two_umg_processes_share_one_rpm_limit(postgres_url: str) -> None:  # noqa: F811
    env = {"DATABASE_URL": postgres_url, "MOCK_MODE": "true"}
    async with umg_serve("serve", "--port", ANY_PORT, env=env) as first:
        url_1 = await first.started()
        dev_key = await first.dev_key()  # the first process on the empty database
        async with umg_serve("serve", "--port", ANY_PORT, env=env) as second:
            url_2 = await second.started()
            made = await trio.run_process(
                [UMG, "keys", "create", "--tenant", "acme", "--project", "web", "--rpm", "3",
                 "--json"],
                env=clean_env(**env), capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            assert made.returncode == 0, made.stderr.decode()
            limited = json.loads(made.stdout)["key"]
            assert limited.startswith("umg_live_")

            async def call(url: str, key: str) -> httpx.Response:
                headers = {"authorization": f"Bearer {key}"}
                async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as c:
                    return await c.post("/v1/responses", json=ask())

            dev = [await call(url_2, dev_key), await call(url_1, dev_key)]
            assert [r.status_code for r in dev] == [200, 200], [r.text for r in dev]
            answers = [await call(url, limited) for url in (url_1, url_2) * 3]
            await second.stopped()
        await first.stopped()
    assert [r.status_code for r in answers] == [200] * 3 + [429] * 3, [r.text for r in answers]
    remaining = [r.headers["x-ratelimit-remaining-requests"] for r in answers]
    assert remaining == ["2", "1", "0", "0", "0", "0"]
    assert all(1 <= int(r.headers["retry-after"]) <= 20 for r in answers[3:])
    assert "umg_live_" not in second.stdout  # only the first start mints a key
    assert "Traceback" not in first.stderr + second.stderr



async def test_processes_starting_together_on_an_empty_database_mint_one_dev_key(
    postgres_url: str,  # noqa: F811
) -> None:
    env = {"DATABASE_URL": postgres_url, "MOCK_MODE": "true"}
    async with (
        umg_serve("serve", "--port", ANY_PORT, env=env) as a,
        umg_serve("serve", "--port", ANY_PORT, env=env) as b,
        umg_serve("serve", "--port", ANY_PORT, env=env) as c,
    ):
        servers = (a, b, c)
        for server in servers:
            await server.started()  # the key, if any, is printed before the port is bound
        for server in servers:
            await server.stopped()
    printed = [s.stdout.count("umg_live_") for s in servers]
    assert sorted(printed) == [0, 0, 1], printed
    storage = open_storage(postgres_url)
    try:
        assert await storage.count_keys() == 1
    finally:
        await storage.close()
