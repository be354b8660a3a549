"""End to end: the request log and `GET /metrics` of a real gateway.

- Log lines are captured as the JSON formatter writes them (adapters/telemetry.py), parsed
  as JSON and checked field by field for a request that succeeds and one that fails.
- `/metrics` is parsed with prometheus_client's text parser; its counters move as
  requests are made (plain, stream, fallback, 429, 402, unknown model), and it needs an
  admin key unless `[metrics] public = true`.
- A run with a provider that echoes its key in an error, a bad client key and ordinary
  requests: no log line and no error body holds the client's key or a provider's key.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from attrs import evolve
from prometheus_client.parser import text_string_to_metric_families

from adapters.admin import create_key
from adapters.telemetry import JsonFormatter, configure_logging
from tests.fakes import FakeProvider, Fault, running_fake_provider
from tests.server.conftest import Running, start_gateway
from tests.server.conftest import test_settings as settings_for
from tests.server.live import PROVIDER_KEYS
from tests.server.test_e2e_failures import ask, only_row, start_live


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What the JSON formatter writes for the gateway's loggers, at INFO."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    umg = logging.getLogger("umg")
    saved = umg.level
    umg.addHandler(handler)
    umg.setLevel(logging.INFO)
    try:
        yield out
    finally:
        umg.removeHandler(handler)
        umg.setLevel(saved)


def parsed(out: io.StringIO, event: str | None = None) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    return [line for line in lines if event is None or line.get("event") == event]


@pytest.fixture
async def fake() -> Any:
    async with running_fake_provider() as provider:
        yield provider


async def admin_key(gw: Running) -> str:
    plain, _ = await create_key(gw.services.storage, gw.services.clock, tenant="ops", project="ops", admin=True)
    return plain


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, from the Prometheus text format."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(gw: Running, key: str) -> dict[Any, float]:
    async with gw.client(key) as client:
        r = await client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(r.text)


# -- logs --------------------------------------------------------------------------------


async def test_a_successful_request_has_one_log_line_with_every_field(
    gateway: Running, log_lines: io.StringIO
) -> None:
    async with gateway.client() as client:
        r = await client.post(
            "/v1/responses",
            json={"model": "mock-fast", "input": "hello there"},
            headers={"x-request-id": "my-request-7"},
        )
    assert r.status_code == 200, r.text
    row = await only_row(gateway)
    (line,) = parsed(log_lines, "request")
    assert line["level"] == "info" and line["logger"] == "umg.request"
    assert line["time"].endswith("Z")
    assert line["request_id"] == row.request_id
    assert line["client_request_id"] == "my-request-7" == r.headers["x-request-id"]
    assert gateway.key.startswith(f"umg_live_{line['key_prefix']}_")
    expected = {
        "tenant": "t1", "project": "p1", "surface": "responses", "model": "mock-fast",
        "stream": False, "routing": "cost", "provider": "mock", "deployment": row.deployment,
        "status": "ok", "error_code": None, "error": None,
        "input_tokens": row.input_tokens, "cached_input_tokens": 0,
        "output_tokens": row.output_tokens, "cost_usd": r.json()["gateway"]["cost_usd"],
        "latency_ms": row.latency_ms, "ttft_ms": None, "finish_reason": "stop",
    }
    assert {k: line[k] for k in expected} == expected
    assert line["attempts"] == [
        {"attempt": 1, "deployment": row.deployment, "provider": "mock", "outcome": "ok", "next": "answered"}
    ]
    assert line["overhead_ms"] == r.json()["gateway"]["overhead_ms"]
    assert "trace_id" not in line  # no tracing observer: no tag


async def test_a_failed_request_logs_its_attempts_error_and_status(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider, log_lines: io.StringIO
) -> None:
    gw = await start_live(nursery, tmp_path, fake)
    fake.script(Fault(status=500), Fault(status=400, message="bad thing"))
    async with gw.client() as client:
        r = await client.post("/v1/responses", json=ask(text="hello there", stream=True))
    assert r.status_code == 200, r.text  # the stream began: the error is its last event
    assert "event: response.failed" in r.text
    row = await only_row(gw)
    (line,) = parsed(log_lines, "request")
    assert line["level"] == "warning"
    expected = {
        "request_id": row.request_id, "client_request_id": r.headers["x-request-id"],
        "surface": "responses", "model": "gpt-4.1", "stream": True, "routing": "reliability",
        "provider": "anthropic", "status": "error", "error_code": "upstream_rejected",
        "output_tokens": 0, "cost_usd": "0", "finish_reason": None,
    }
    assert {k: line[k] for k in expected} == expected
    assert "bad thing" in line["error"]
    assert [(a["provider"], a["outcome"], a["next"]) for a in line["attempts"]] == [
        ("openai", "server_error", "fallback"),
        ("anthropic", "bad_request", "gave_up"),
    ]
    assert line["latency_ms"] == row.latency_ms
    gw.stop.set()


async def test_an_unauthenticated_request_and_a_breaker_have_their_lines(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider, log_lines: io.StringIO
) -> None:
    gw = await start_live(nursery, tmp_path, fake, failure_threshold=1)
    async with gw.client("umg_live_abc_def") as client:
        r = await client.post("/v1/chat/completions", json={"model": "gpt-4.1", "messages": []})
    assert r.status_code == 401
    (refused,) = parsed(log_lines, "request")
    assert (refused["status"], refused["error_code"], refused["surface"]) == (
        "unauthenticated", "invalid_api_key", "chat.completions",
    )
    assert refused["client_request_id"] == r.headers["x-request-id"]
    fake.script(Fault(status=500), Fault(status=500))
    async with gw.client() as client:
        await client.post("/v1/responses", json=ask(text="hello there"))
    breakers = parsed(log_lines, "breaker")
    assert {"deployment": "openai/gpt-4.1", "before": "closed", "after": "open"}.items() <= breakers[0].items()
    assert breakers[0]["level"] == "warning"
    gw.stop.set()


async def test_request_lines_can_be_turned_off(
    nursery: trio.Nursery, tmp_path: Path, log_lines: io.StringIO
) -> None:
    gw = await start_gateway(nursery, settings_for(tmp_path, UMG_REQUEST_LOG="false"))
    async with gw.client() as client:
        r = await client.post("/v1/responses", json={"model": "mock-fast", "input": "hi"})
    assert r.status_code == 200
    assert parsed(log_lines, "request") == []
    gw.stop.set()


def test_third_party_loggers_are_quiet_unless_asked() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {n: logging.getLogger(n).level for n in ("httpx", "hypercorn.error")})
    try:
        configure_logging("debug")
        assert logging.getLogger("umg").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("hypercorn.error").isEnabledFor(logging.INFO)
        configure_logging("info", "info")
        assert logging.getLogger("httpx").isEnabledFor(logging.INFO)
        configure_logging("error", "debug")  # never below our own level
        assert not logging.getLogger("httpx").isEnabledFor(logging.WARNING)
    finally:
        root.handlers[:], level, levels = saved
        root.setLevel(level)
        for name, lvl in levels.items():
            logging.getLogger(name).setLevel(lvl)


# -- secrets -----------------------------------------------------------------------------


async def test_no_log_line_or_error_body_holds_the_client_key_or_a_provider_key(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider, log_lines: io.StringIO
) -> None:
    gw = await start_live(nursery, tmp_path, fake)
    openai_key, anthropic_key = PROVIDER_KEYS["OPENAI_API_KEY"], PROVIDER_KEYS["ANTHROPIC_API_KEY"]
    # providers that echo the gateway's key in their errors (OpenAI's 401 does)
    fake.script(
        Fault(status=401, message=f"Incorrect API key provided: {openai_key}"),
        Fault(status=500, message=f"upstream saw {openai_key}"),
        Fault(status=400, message=f"bad request from {anthropic_key}"),
    )
    bodies: list[str] = []
    wrong = gw.key[:-4] + "zzzz"
    async with gw.client() as client:
        for body in (ask(text="one"), ask(text="two"), ask(text="three", stream=True), ask(text="four")):
            r = await client.post("/v1/responses", json=body)
            bodies.append(r.text)
        r = await client.post("/v1/chat/completions", json={"model": "gpt-4.1", "messages": 5})
        assert r.status_code == 400
        bodies.append(r.text)
    async with gw.client(wrong) as client:
        r = await client.post("/v1/responses", json=ask())
        assert r.status_code == 401
        bodies.append(r.text)
    async with httpx.AsyncClient(base_url=gw.url, headers={"x-api-key": gw.key + "x"}) as client:
        bodies.append((await client.post("/v1/messages", json={})).text)
    lines = log_lines.getvalue()
    assert len(parsed(log_lines, "request")) == 7
    assert any(json.loads(b).get("error") for b in bodies[:3])  # the faults were answered as errors
    for secret in (gw.key, wrong, gw.key + "x", openai_key, anthropic_key):
        assert secret not in lines
        for body in bodies:
            assert secret not in body
    gw.stop.set()


# -- metrics -----------------------------------------------------------------------------


async def test_metrics_need_an_admin_key(gateway: Running) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        r = await client.get("/metrics")
    assert r.status_code == 401
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
    async with gateway.client("umg_live_nope_nope") as client:
        assert (await client.get("/metrics")).status_code == 401
    async with gateway.client() as client:  # a tenant key
        r = await client.get("/metrics")
    assert r.status_code == 403, r.text
    assert "admin key" in r.json()["error"]["message"]
    await scrape(gateway, await admin_key(gateway))


async def test_metrics_can_be_public_or_off(nursery: trio.Nursery, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    public = await start_gateway(nursery, settings_for(tmp_path / "a", UMG_METRICS_PUBLIC="true"))
    async with httpx.AsyncClient(base_url=public.url) as client:
        r = await client.get("/metrics")
    assert r.status_code == 200 and "umg_requests_total" in r.text
    off = await start_gateway(nursery, settings_for(tmp_path / "b", UMG_METRICS="false"))
    async with off.client(await admin_key(off)) as client:
        assert (await client.get("/metrics")).status_code == 404
    public.stop.set()
    off.stop.set()


async def test_counters_move_with_plain_stream_429_402_and_unknown_model_requests(
    gateway: Running,
) -> None:
    admin = await admin_key(gateway)
    before = await scrape(gateway, admin)
    assert value(before, "umg_requests_total", surface="responses", model="mock-fast", provider="mock", status="ok") == 0
    limited = await gateway.new_key(rpm=1)
    broke = await gateway.new_key(budget_usd=Decimal("0"))
    body = {"model": "mock-fast", "input": "hello there"}
    async with gateway.client() as client:
        assert (await client.post("/v1/responses", json=body)).status_code == 200
        r = await client.post("/v1/chat/completions", json={
            "model": "mock-fast", "stream": True, "messages": [{"role": "user", "content": "hi"}],
        })
        assert r.status_code == 200
        assert (await client.post("/v1/responses", json={**body, "model": "no-such-model"})).status_code == 404
    async with gateway.client(limited) as client:
        assert (await client.post("/v1/responses", json=body)).status_code == 200
        assert (await client.post("/v1/responses", json=body)).status_code == 429
    async with gateway.client(broke) as client:
        assert (await client.post("/v1/responses", json=body)).status_code == 402

    after = await scrape(gateway, admin)
    ok = {"model": "mock-fast", "provider": "mock", "status": "ok"}
    assert value(after, "umg_requests_total", surface="responses", **ok) == 2
    assert value(after, "umg_requests_total", surface="chat.completions", **ok) == 1
    assert value(after, "umg_requests_total", surface="responses", model="mock-fast", provider="none", status="rate_limited") == 1
    assert value(after, "umg_requests_total", surface="responses", model="mock-fast", provider="none", status="budget_exceeded") == 1
    # a model name the catalog does not have is counted as "other" (bounded labels)
    assert value(after, "umg_requests_total", surface="responses", model="other", provider="none", status="error") == 1
    assert value(after, "umg_refusals_total", reason="rate_limited") == 1
    assert value(after, "umg_refusals_total", reason="budget_exceeded") == 1
    assert value(after, "umg_time_to_first_token_seconds_count", surface="chat.completions", provider="mock") == 1
    assert value(after, "umg_request_duration_seconds_count", surface="responses", provider="mock") == 2
    assert value(after, "umg_gateway_overhead_seconds_count", surface="responses") == 5
    row_tokens = value(after, "umg_tokens_total", model="mock-fast", provider="mock", kind="output")
    assert row_tokens > 0
    assert value(after, "umg_cost_usd_total", model="mock-fast", provider="mock", tenant="t1", project="p1") > 0
    assert value(after, "umg_in_flight_requests") == 0 and value(after, "umg_in_flight_streams") == 0
    assert value(after, "umg_upstream_attempts_total", provider="mock", outcome="ok") == 3
    assert value(after, "umg_ledger_write_seconds_count") == 6
    text = (await gateway.client(admin).get("/metrics")).text
    for row in await gateway.services.storage.usage_rows("t1", *_window()):
        assert row.request_id not in text and row.key_id not in text


async def test_fallbacks_failures_and_the_breaker_are_counted(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider
) -> None:
    gw = await start_live(nursery, tmp_path, fake, failure_threshold=1)
    admin = await admin_key(gw)
    fake.script(Fault(status=500))
    async with gw.client() as client:
        r = await client.post("/v1/responses", json=ask(text="hello there"))
    assert r.status_code == 200, r.text
    found = await scrape(gw, admin)
    assert value(found, "umg_fallbacks_total", provider="openai") == 1
    assert value(found, "umg_upstream_failures_total", provider="openai", kind="server_error") == 1
    assert value(found, "umg_upstream_attempts_total", provider="anthropic", outcome="ok") == 1
    assert value(found, "umg_breaker_state", deployment="openai/gpt-4.1") == 2  # open
    assert value(found, "umg_breaker_transitions_total", deployment="openai/gpt-4.1", to="open") == 1
    assert value(found, "umg_requests_total", surface="responses", model="gpt-4.1", provider="anthropic", status="ok") == 1
    gw.stop.set()


def _window() -> tuple[Any, Any]:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    return now - timedelta(days=1), now + timedelta(days=1)


async def test_a_job_run_and_a_webhook_delivery_have_their_lines(
    gateway: Running, log_lines: io.StringIO
) -> None:
    from tests.server.test_e2e_jobs import REQUEST, create, until

    # the job's webhook goes from the outbox, sent by the gateway's own delivery workers, to
    # a mock receiver that answers 503, with no retries left: one failed attempt, given up
    jobs = gateway.services.jobs
    assert jobs is not None
    sender = jobs.deliverer
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(503))) as http:
        saved = sender.http, sender.targets, sender.policy
        sender.http = http
        sender.targets = evolve(sender.targets, allow_hosts=frozenset({"receiver.test"}), allow_http=True)
        sender.policy = evolve(sender.policy, retry_delays=())
        try:
            async with gateway.client() as client:
                r = await create(client, {"request": REQUEST, "webhook_url": "http://receiver.test/h"})
                assert r.status_code == 202, r.text
                job = await until(client, r.json()["id"], {"succeeded"})
            with trio.fail_after(5):
                while not (parsed(log_lines, "job") and parsed(log_lines, "webhook")):
                    await trio.sleep(0.01)
        finally:
            sender.http, sender.targets, sender.policy = saved
    (line,) = parsed(log_lines, "job")
    (run,) = [entry for entry in parsed(log_lines, "request") if entry["surface"] == "jobs"]
    expected = {"job_id": job["id"], "tenant": "t1", "status": "succeeded", "attempt": 1,
                "error_code": None, "request_id": run["request_id"], "level": "info"}
    assert {k: line[k] for k in expected} == expected
    assert line["duration_ms"] > 0

    (delivery,) = await gateway.services.storage.deliveries_of_job(job["id"])
    (hook,) = parsed(log_lines, "webhook")
    assert {k: hook[k] for k in ("message_id", "job_id", "attempt", "status_code", "ok", "error", "gave_up")} == {
        "message_id": delivery.id, "job_id": job["id"], "attempt": 1, "status_code": 503,
        "ok": False, "error": "HTTP 503", "gave_up": True,
    }
    assert hook["level"] == "warning"
    assert hook["message"] == f"webhook {delivery.id} failed: HTTP 503 (given up)"
    # the failed attempt is logged once: no other line of any logger names the message
    assert [line for line in parsed(log_lines) if delivery.id in json.dumps(line)] == [hook]


def test_the_formatter_redacts_keys_anywhere_in_the_line() -> None:
    record = logging.makeLogRecord({
        "msg": "saw %s", "args": ("umg_live_abc_def",), "name": "umg.x", "levelname": "INFO",
        "attempts": [{"detail": "Incorrect API key provided: sk-ant-api03-secret"}],
        "nested": {"deep": ["sk-proj-1234567890abcdefXYZ"]}, "count": 3,
    })
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "saw [redacted]"
    assert line["attempts"] == [{"detail": "Incorrect API key provided: [redacted]"}]
    assert line["nested"] == {"deep": ["[redacted]"]} and line["count"] == 3
