"""End to end: per-key rate limits and budgets, and per-request cost caps, on the real server.

Each test starts the real gateway (mock providers, SQLite) on port 0 and talks HTTP to it.
The ledger is read back through `services.storage` to check that money never overshoots.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import trio

from adapters import keys
from adapters.storage.records import KeyRecord, UsageRecord
from core.billing import worst_case_cost
from core.budget import max_output_tokens_that_fit
from core.tokens import estimate_request_tokens
from server.wire.responses import parse_responses_request
from tests.server.conftest import Running

GO_DURATION = re.compile(r"^(\d+ms|(\d+h)?(\d+m)?\d+(\.\d+)?s)$")


def ask(text: str = "hello there", model: str = "mock-fast", **extra: Any) -> dict[str, Any]:
    return {"model": model, "input": text, **extra}


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


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    assert set(err) == {"message", "type", "param", "code", "request_id"}, err
    return err


# -- requests per minute -------------------------------------------------------------------


async def test_rpm_third_request_is_429_with_consistent_headers(gateway: Running) -> None:
    key = await gateway.new_key(rpm=2)
    async with gateway.client(key=key) as client:
        first = await client.post("/v1/responses", json=ask())
        second = await client.post("/v1/responses", json=ask())
        third = await client.post("/v1/responses", json=ask())

    for ok in (first, second):
        assert ok.status_code == 200, ok.text
        assert ok.headers["x-ratelimit-limit-requests"] == "2"
        assert GO_DURATION.match(ok.headers["x-ratelimit-reset-requests"])
        assert "x-ratelimit-limit-tokens" not in ok.headers  # no tpm on this key
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"

    assert third.status_code == 429, third.text
    err = error_of(third)
    assert err["type"] == "rate_limit_error"
    assert err["code"] == "rate_limit_exceeded"
    assert "requests per minute" in err["message"]
    retry_after = int(third.headers["retry-after"])
    # 2 per minute refill one request every 30 s, and the bucket is empty now
    assert 1 <= retry_after <= 30
    assert third.headers["x-ratelimit-limit-requests"] == "2"
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert GO_DURATION.match(third.headers["x-ratelimit-reset-requests"])


async def test_rpm_applies_across_api_surfaces(gateway: Running) -> None:
    key = await gateway.new_key(rpm=1)
    async with gateway.client(key=key) as client:
        r1 = await client.post(
            "/v1/chat/completions",
            json={"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}]},
        )
        r2 = await client.post(
            "/v1/messages",
            json={
                "model": "mock-fast",
                "max_tokens": 20,
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
    assert r1.status_code == 200, r1.text
    assert r2.status_code == 429, r2.text
    assert r2.json()["type"] == "error"
    assert r2.json()["error"]["type"] == "rate_limit_error"
    assert "retry-after" in r2.headers


async def test_rate_headers_include_tokens_when_tpm_is_set(gateway: Running) -> None:
    # tpm 1,000 refills 16.7 tokens/s, and the Mock answers exactly the 50 output tokens
    # charged up front (no refund): the second request sees fewer tokens left unless more
    # than ~3.5 s pass between the two, so a loaded machine cannot make this flaky
    key = await gateway.new_key(rpm=10, tpm=1_000)
    body = ask(max_output_tokens=50, metadata={"mock_scenario": "output_tokens=50"})
    async with gateway.client(key=key) as client:
        r1 = await client.post("/v1/responses", json=body)
        r2 = await client.post("/v1/responses", json=body)
    for r in (r1, r2):
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-limit-requests"] == "10"
        assert r.headers["x-ratelimit-limit-tokens"] == "1000"
        assert GO_DURATION.match(r.headers["x-ratelimit-reset-tokens"])
    assert int(r1.headers["x-ratelimit-remaining-requests"]) == 9
    assert int(r2.headers["x-ratelimit-remaining-requests"]) == 8
    t1 = int(r1.headers["x-ratelimit-remaining-tokens"])
    t2 = int(r2.headers["x-ratelimit-remaining-tokens"])
    # each request is charged at least its 50 output tokens up front
    assert t1 <= 1_000 - 50
    assert t2 < t1


# -- tokens per minute -------------------------------------------------------------------


async def test_tpm_limit_gives_429_with_token_headers(gateway: Running) -> None:
    key = await gateway.new_key(tpm=100)
    scenario = {"mock_scenario": "output_tokens=60"}
    async with gateway.client(key=key) as client:
        first = await client.post(
            "/v1/responses", json=ask("hi", max_output_tokens=60, metadata=scenario)
        )
        second = await client.post(
            "/v1/responses", json=ask("hi", max_output_tokens=60, metadata=scenario)
        )
    assert first.status_code == 200, first.text
    assert first.json()["usage"]["output_tokens"] == 60
    assert second.status_code == 429, second.text
    err = error_of(second)
    assert err["code"] == "rate_limit_exceeded"
    assert "tokens per minute" in err["message"]
    assert int(second.headers["retry-after"]) >= 1
    assert second.headers["x-ratelimit-limit-tokens"] == "100"
    assert int(second.headers["x-ratelimit-remaining-tokens"]) < 60


async def test_request_bigger_than_tpm_is_429_that_says_so(gateway: Running) -> None:
    key = await gateway.new_key(tpm=50)
    async with gateway.client(key=key) as client:
        r = await client.post("/v1/responses", json=ask("word " * 100))
        # a small request still fits: the big one took nothing from the bucket
        small = await client.post("/v1/responses", json=ask("hi", max_output_tokens=16))
    assert r.status_code == 429, r.text
    err = error_of(r)
    assert "too large" in err["message"]
    assert "tokens per minute" in err["message"]
    assert "limit 50" in err["message"]
    assert "retry-after" not in r.headers  # waiting never helps
    assert small.status_code == 200, small.text


# -- key budgets ---------------------------------------------------------------------------


async def test_key_budget_runs_out_with_402_and_never_overspends(gateway: Running) -> None:
    budget = Decimal("0.00003")  # a handful of mock-fast requests
    key = await gateway.new_key(budget_usd=budget)
    record = await key_record(gateway, key)
    statuses: list[int] = []
    last: httpx.Response | None = None
    async with gateway.client(key=key) as client:
        for _ in range(40):
            last = await client.post(
                "/v1/responses", json=ask("please tell me a story about budgets")
            )
            statuses.append(last.status_code)
            if last.status_code != 200:
                break
    assert last is not None
    assert statuses[0] == 200, last.text
    assert last.status_code == 402, (statuses, last.text)
    err = error_of(last)
    assert err["type"] == "budget_exceeded"
    assert err["code"] == "budget_exceeded"

    rows = await ledger(gateway, record)
    assert len(rows) == len(statuses)
    spent = sum((r.cost for r in rows), Decimal(0))
    assert Decimal(0) < spent <= budget
    assert rows[-1].status == "budget_exceeded"
    assert rows[-1].cost == 0
    state = await gateway.services.gateway.limits.key_budget(record)
    assert state is not None
    assert state.spent == spent
    assert state.spent + state.reserved <= budget


async def test_budget_holds_when_two_requests_race(gateway: Running) -> None:
    # The first request's reservation (its worst case) takes the whole budget; the other
    # must be refused while it runs, whichever wins the race.
    budget = Decimal("0.0001")
    key = await gateway.new_key(budget_usd=budget)
    record = await key_record(gateway, key)
    results: list[httpx.Response] = []
    body = ask(metadata={"mock_scenario": "latency_ms=300"})
    async with gateway.client(key=key) as client:

        async def one() -> None:
            results.append(await client.post("/v1/responses", json=body))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one)
            nursery.start_soon(one)
    assert sorted(r.status_code for r in results) == [200, 402], [r.text for r in results]
    rows = await ledger(gateway, record)
    assert len(rows) == 2
    assert sum((r.cost for r in rows), Decimal(0)) <= budget
    state = await gateway.services.gateway.limits.key_budget(record)
    assert state is not None and state.reserved == 0


async def test_rpm_holds_when_requests_race(gateway: Running) -> None:
    key = await gateway.new_key(rpm=2)
    results: list[httpx.Response] = []
    async with gateway.client(key=key) as client:

        async def one() -> None:
            results.append(await client.post("/v1/responses", json=ask()))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(one)
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 200, 429, 429, 429], [r.text for r in results]


# -- per-request cost caps -----------------------------------------------------------------


async def test_max_cost_too_small_for_any_deployment_names_the_field(gateway: Running) -> None:
    body = ask(constraints={"budget": {"max_cost_usd": "0.0000000001"}})
    async with gateway.client() as client:
        r = await client.post("/v1/responses", json=body)
        chat = await client.post(
            "/v1/chat/completions",
            json={
                "model": "mock-fast",
                "messages": [{"role": "user", "content": "hello"}],
                "constraints": {"budget": {"max_cost_usd": 1e-10}},
            },
        )
    for resp in (r, chat):
        assert 400 <= resp.status_code < 500, resp.text
        err = error_of(resp)
        assert err["param"] == "constraints.budget.max_cost_usd"
        assert "max_cost_usd" in err["message"]


async def test_max_cost_caps_output_tokens(gateway: Running) -> None:
    # mock-smart: $1 / 1M input, $4 / 1M output. 0.0001 USD pays for the input and about
    # 20 output tokens, far fewer than the 200 the scenario would write.
    max_cost = Decimal("0.0001")
    body = ask(
        "write a long essay",
        model="mock-smart",
        metadata={"mock_scenario": "output_tokens=200"},
        constraints={
            "budget": {"max_cost_usd": str(max_cost)},
            "routing": {"allow_providers": ["mock"]},
        },
    )
    async with gateway.client() as client:
        r = await client.post("/v1/responses", json=body)
        full = await client.post(
            "/v1/responses",
            json={**body, "constraints": {"routing": {"allow_providers": ["mock"]}}},
        )
    assert r.status_code == 200, r.text
    capped = r.json()
    assert full.status_code == 200, full.text
    assert full.json()["usage"]["output_tokens"] == 200
    out = capped["usage"]["output_tokens"]
    assert 1 <= out < 200
    assert capped["status"] == "incomplete"
    assert capped["incomplete_details"] == {"reason": "max_output_tokens"}
    cost = Decimal(capped["gateway"]["cost_usd"])
    assert Decimal(0) < cost <= max_cost
    # the cap is the largest output that fits next to the gateway's (upper-leaning) input
    # estimate, so a single token more could have broken the budget
    request = parse_responses_request(body)
    price = gateway.services.gateway.catalog.models["mock-smart"].deployments[0].price
    estimate = estimate_request_tokens(request)
    assert out == max_output_tokens_that_fit(max_cost, price, estimate)
    assert worst_case_cost(estimate, out + 1, price) > max_cost


async def test_max_cost_caps_streamed_output(gateway: Running) -> None:
    max_cost = Decimal("0.0001")
    body = ask(
        "write a long essay",
        model="mock-smart",
        stream=True,
        metadata={"mock_scenario": "output_tokens=200"},
        constraints={
            "budget": {"max_cost_usd": str(max_cost)},
            "routing": {"allow_providers": ["mock"]},
        },
    )
    async with gateway.client() as client:
        r = await client.post("/v1/responses", json=body)
    assert r.status_code == 200, r.text
    datas = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    last = datas[-1]
    assert last["type"] in ("response.completed", "response.incomplete"), last["type"]
    response = last["response"]
    assert 1 <= response["usage"]["output_tokens"] < 200
    assert Decimal(0) < Decimal(response["gateway"]["cost_usd"]) <= max_cost
