"""End to end: provider failures through the real gateway, against the fake provider.

Each test starts the gateway in live mode (OpenAI, Anthropic and "local" all pointed at
the fake provider over real sockets), injects faults with `fake.script(Fault(...))`, and
checks three things: what the client got, what the fake received, and the one ledger row
(read back through `services.storage`).

Catalog facts used here: "gpt-4.1" (OpenAI, one deployment) falls back to
"claude-sonnet-4" (Anthropic) then "gpt-4o". The fake serves OpenAI on
`/v1/chat/completions` and Anthropic on `/v1/messages`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from attrs import evolve

from adapters.config.loader import load_settings
from adapters.providers.base import Provider, Timeouts
from adapters.storage.records import UsageRecord
from core.billing import cost
from core.budget import max_output_tokens_that_fit
from core.catalog import Deployment
from core.model import Completion, GatewayRequest, StreamEvent, Usage
from core.tokens import estimate_request_tokens
from server.services import Services, build_services
from server.wire.responses import parse_responses_request
from tests.fakes import FakeProvider, Fault, running_fake_provider
from tests.server.conftest import Running, start_gateway
from tests.server.live import BASE_CONFIG, PROVIDER_KEYS

OPENAI = "/v1/chat/completions"
ANTHROPIC = "/v1/messages"
TEXT = "one two three four five six seven"  # the fake answers "Echo: one ... seven": 8 words
# The default "cost" strategy would put the cheaper gpt-4o before claude-sonnet-4 among
# gpt-4.1's fallbacks; "reliability" ranks unobserved deployments by id, so Anthropic's
# comes first (and stays first once it has succeeded).
ROUTE: dict[str, Any] = {"routing": {"strategy": "reliability"}}


# -- helpers -------------------------------------------------------------------------------


def _tuned(base: str, old: str, new: str) -> str:
    assert old in base, f"live.py's BASE_CONFIG no longer contains {old!r}"
    return base.replace(old, new)


async def start_live(
    nursery: trio.Nursery,
    tmp_path: Path,
    fake: FakeProvider,
    *,
    connect: float = 2.0,
    first_byte: float = 5.0,
    idle: float = 2.0,
    failure_threshold: int = 5,
    cooldown: float = 0.3,
    tweak: Callable[[Services], None] | None = None,
) -> Running:
    """`tests.server.live.live_gateway` with the timeouts and breaker tunable (the base
    config already has `[timeouts]` and `[health]` tables, so appending them is not TOML)."""
    text = BASE_CONFIG.format(openai_url=fake.openai_base_url)
    text = _tuned(text, "connect = 2.0\n", f"connect = {connect}\n")
    text = _tuned(text, "first_byte = 30.0\n", f"first_byte = {first_byte}\n")
    text = _tuned(text, "idle = 30.0\n", f"idle = {idle}\n")
    text = _tuned(
        text,
        "[health]\ncooldown = 0.3\n",
        f"[health]\ncooldown = {cooldown}\nfailure_threshold = {failure_threshold}\n",
    )
    path = tmp_path / "failures.toml"
    path.write_text(text)
    settings = load_settings(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path}/failures.db",
            "UMG_CONFIG": str(path),
            "OPENAI_BASE_URL": fake.openai_base_url,
            "ANTHROPIC_BASE_URL": fake.base_url,
            **PROVIDER_KEYS,
        }
    )
    assert not settings.mock_mode
    assert settings.health.failure_threshold == failure_threshold
    assert settings.timeouts.first_byte == first_byte
    services = await build_services(settings)
    if tweak is not None:
        tweak(services)
    return await start_gateway(nursery, settings, services)


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with running_fake_provider() as provider:
        yield provider


async def ledger(gw: Running) -> list[UsageRecord]:
    now = datetime.now(UTC)
    return await gw.services.storage.usage_rows("t1", now - timedelta(days=1), now + timedelta(days=1))


async def only_row(gw: Running) -> UsageRecord:
    rows = await ledger(gw)
    assert len(rows) == 1, rows
    return rows[0]


async def eventually_one_row(gw: Running, timeout: float = 5.0) -> UsageRecord:
    """The ledger row of a stream is written by the producer task after the client left."""
    with trio.fail_after(timeout):
        while not (rows := await ledger(gw)):
            await trio.sleep(0.01)
    assert len(rows) == 1, rows
    return rows[0]


def price_of(gw: Running, model: str) -> Any:
    (deployment,) = gw.services.gateway.catalog.resolve(model).deployments
    return deployment.price


def paths(fake: FakeProvider, start: int = 0) -> list[str]:
    return [q.path for q in fake.requests[start:]]


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    assert set(err) == {"message", "type", "param", "code", "request_id"}, err
    return err


def sse(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) per SSE event; comments (keep-alives) are skipped."""
    events: list[tuple[str | None, str]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data:
            events.append((name, "\n".join(data)))
    return events


def responses_events(text: str) -> list[dict[str, Any]]:
    out = []
    for name, data in sse(text):
        body = json.loads(data)
        assert body["type"] == name
        out.append(body)
    return out


def ask(model: str = "gpt-4.1", text: str = TEXT, **extra: Any) -> dict[str, Any]:
    return {"model": model, "input": text, "constraints": dict(ROUTE), **extra}


def chat(model: str = "gpt-4.1", text: str = TEXT, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "constraints": dict(ROUTE),
        **extra,
    }


def outcomes(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["provider"], a["outcome"]) for a in body["gateway"]["attempts"]]


def output_text(body: dict[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in body["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


# -- retry, then fallback ------------------------------------------------------------------


async def test_a_500_moves_to_the_anthropic_fallback_at_once_without_retrying_openai(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider
) -> None:
    gw = await start_live(nursery, tmp_path, fake)
    fake.script(Fault(status=500))
    async with gw.client() as client:
        r = await client.post("/v1/responses", json=ask(text="hello there"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert output_text(body) == "Echo: hello there"
    # a 5xx says the provider is down: the next attempt goes to another provider
    assert paths(fake) == [OPENAI, ANTHROPIC]
    assert [q.json()["model"] for q in fake.requests] == ["gpt-4.1", "claude-sonnet-4-20250514"]
    assert outcomes(body) == [("openai", "server_error"), ("anthropic", "ok")]
    assert [a["attempt"] for a in body["gateway"]["attempts"]] == [1, 2]
    assert body["gateway"]["provider"] == "anthropic"

    row = await only_row(gw)
    # the fake counts input as words + 4 per message, output as answer words
    assert (row.input_tokens, row.output_tokens) == (2 + 4, 3)
    expected = cost(Usage(input_tokens=6, output_tokens=3), price_of(gw, "claude-sonnet-4"))
    assert expected > 0
    assert (row.status, row.provider, row.attempts, row.cost) == ("ok", "anthropic", 2, expected)
    assert row.price_version == price_of(gw, "claude-sonnet-4").version
    assert Decimal(body["gateway"]["cost_usd"]) == expected
    gw.stop.set()


# -- non-retryable provider answers ----------------------------------------------------------


@pytest.mark.parametrize(
    ("upstream", "status", "kind", "code"),
    [
        # the provider says the request is invalid: the client's fault, passed on as a 400
        (400, 400, "invalid_request_error", "upstream_rejected"),
        # the provider refuses the gateway's own credentials: a gateway-side 502, no detail
        (401, 502, "upstream_error", "upstream_error"),
    ],
)
async def test_non_retryable_provider_error_fails_at_once_without_fallback(
    nursery: trio.Nursery,
    tmp_path: Path,
    fake: FakeProvider,
    upstream: int,
    status: int,
    kind: str,
    code: str,
) -> None:
    gw = await start_live(nursery, tmp_path, fake)
    fake.script(Fault(status=upstream, message="nope, key {api_key} is not welcome here"))
    async with gw.client() as client:
        r = await client.post("/v1/responses", json=ask())
        r_chat = await client.post("/v1/chat/completions", json=chat())
    assert r_chat.status_code == 200, "only the first request was faulted"
    assert r.status_code == status, r.text
    err = error_of(r)
    assert (err["type"], err["code"]) == (kind, code)
    assert PROVIDER_KEYS["OPENAI_API_KEY"] not in r.text
    assert "Traceback" not in r.text
    assert paths(fake) == [OPENAI, OPENAI], "no retry and no fallback for the faulted one"

    rows = await ledger(gw)
    assert sorted(row.status for row in rows) == ["error", "ok"]
    (failed,) = [row for row in rows if row.status != "ok"]
    assert (failed.endpoint, failed.error_code, failed.provider, failed.attempts) == (
        "responses", code, "openai", 1
    )
    assert (failed.output_tokens, failed.cost) == (0, Decimal(0))
    # the caller's own mistake does not count against the deployment's health; the
    # gateway's rejected credentials do
    health = gw.services.gateway.health.snapshot()["openai/gpt-4.1"]
    assert health.recent == ((True,) if upstream == 400 else (False, True))
    gw.stop.set()


# -- rate limits with a wait hint ------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "wait"),
    [({"retry-after": "1"}, 1.0), ({"retry-after-ms": "400"}, 0.4)],
)
async def test_429_wait_hint_is_honoured_before_retrying_the_same_deployment(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider, headers: dict[str, str], wait: float
) -> None:
    gw = await start_live(nursery, tmp_path, fake)
    fake.script(Fault(status=429, headers=headers))
    async with gw.client() as client:
        started = trio.current_time()
        r = await client.post("/v1/responses", json=ask())
        elapsed = trio.current_time() - started
    assert r.status_code == 200, r.text
    assert outcomes(r.json()) == [("openai", "rate_limited"), ("openai", "ok")]
    assert paths(fake) == [OPENAI, OPENAI]
    # waited the hint, not the 10-50 ms backoff. Untimed above: load only lengthens a wait;
    # that the wait is the hint and no more is core's (SleepUntil(now + hint),
    # tests/core/test_attempts.py) and reading the headers adapters' (test_provider_failures);
    # a hint misread as larger than max_retry_after would have fallen back (the outcomes).
    assert elapsed >= wait, elapsed
    row = await only_row(gw)
    assert (row.status, row.provider, row.attempts) == ("ok", "openai", 2)
    gw.stop.set()


async def test_429_wait_longer_than_max_retry_after_falls_back_at_once(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider
) -> None:
    gw = await start_live(nursery, tmp_path, fake)  # max_retry_after = 2.0
    fake.script(Fault(status=429, headers={"retry-after": "30"}))
    async with gw.client() as client:
        r = await client.post("/v1/responses", json=ask())
    assert r.status_code == 200, r.text
    # fell back at once, untimed: the attempt machine sleeps only before a retry of the same
    # deployment, and the call after the 429 was the fallback
    assert outcomes(r.json()) == [("openai", "rate_limited"), ("anthropic", "ok")]
    assert paths(fake) == [OPENAI, ANTHROPIC]
    row = await only_row(gw)
    assert (row.status, row.provider, row.attempts) == ("ok", "anthropic", 2)
    gw.stop.set()


# -- failures after the first chunk ----------------------------------------------------------

STREAM_FAULTS = {
    "cut": Fault(cut_after=2),
    "error_event": Fault(error_event_after=2),
    "idle": Fault(stall_after=2, stall_for=30),
    "malformed": Fault(malformed_after=2),
}


def check_no_clean_end_responses(text: str) -> tuple[int, dict[str, Any]]:
    """Responses SSE that must end with `error` + `response.failed`; returns (deltas, error)."""
    events = responses_events(text)
    types = [e["type"] for e in events]
    assert types[:2] == ["response.created", "response.in_progress"], types
    assert types[-2:] == ["error", "response.failed"], types
    assert "response.completed" not in types and "response.incomplete" not in types
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert deltas and "".join(deltas).startswith("Echo:"), "the answer had started"
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    # the snapshot's error says what the error event says: code, message, request id
    assert failed["error"]["code"] == events[-2]["code"] == "upstream_error"
    assert failed["error"]["type"] == "upstream_error"
    assert failed["error"]["message"] == events[-2]["message"]
    assert failed["error"]["request_id"] == events[-2]["request_id"] is not None
    return len(deltas), events[-2]


def check_no_clean_end_chat(text: str) -> tuple[int, dict[str, Any]]:
    """Chat SSE that must end with an error chunk and no `[DONE]`; returns (deltas, error)."""
    datas = [data for _, data in sse(text)]
    assert "[DONE]" not in datas, "a failed stream must not end cleanly"
    chunks = [json.loads(d) for d in datas]
    last = chunks[-1]
    assert set(last) == {"error"}, last
    finishes = [c["choices"][0]["finish_reason"] for c in chunks[:-1] if c.get("choices")]
    assert all(f is None for f in finishes), finishes
    deltas = [
        c["choices"][0]["delta"]["content"]
        for c in chunks[:-1]
        if c.get("choices") and c["choices"][0]["delta"].get("content")
    ]
    assert deltas and "".join(deltas).startswith("Echo:"), "the answer had started"
    return len(deltas), last["error"]


@pytest.mark.parametrize("surface", ["responses", "chat"])
@pytest.mark.parametrize("fault", list(STREAM_FAULTS))
async def test_stream_failure_after_first_chunk_ends_with_an_error_and_no_fallback(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider, surface: str, fault: str
) -> None:
    gw = await start_live(nursery, tmp_path, fake, idle=0.5)
    fake.script(STREAM_FAULTS[fault])
    async with gw.client() as client:
        if surface == "responses":
            r = await client.post("/v1/responses/stream", json=ask())
        else:
            r = await client.post("/v1/chat/completions", json=chat(stream=True))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert "Traceback" not in r.text
    if surface == "responses":
        seen, error = check_no_clean_end_responses(r.text)
    else:
        seen, error = check_no_clean_end_chat(r.text)
    assert error["code"] == "upstream_error", error
    assert paths(fake) == [OPENAI], "no second provider after the first chunk"

    row = await eventually_one_row(gw)
    assert (row.status, row.error_code, row.provider, row.attempts) == (
        "error", "upstream_error", "openai", 1
    )
    # the streamed tokens are billed: at least one per delta the client saw, never the
    # whole 8-word answer
    assert seen <= row.output_tokens < 8, (seen, row.output_tokens)
    assert row.input_tokens > 0
    assert row.cost == cost(
        Usage(input_tokens=row.input_tokens, output_tokens=row.output_tokens),
        price_of(gw, "gpt-4.1"),
    )
    assert row.cost > 0
    gw.stop.set()


# -- malformed answers before any content ------------------------------------------------------


async def test_malformed_answers_before_content_are_provider_failures_not_crashes(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider
) -> None:
    gw = await start_live(nursery, tmp_path, fake)
    async with gw.client() as client:
        # a 200 whose JSON body is garbage, then a stream whose first event is garbage
        fake.script(Fault(status=200, body=b"{not json"))
        r = await client.post("/v1/responses", json=ask())
        assert r.status_code == 200, r.text
        # an unreadable answer is the provider's failure (fallen back to another provider)
        assert outcomes(r.json()) == [("openai", "server_error"), ("anthropic", "ok")]

        before = len(fake.requests)
        fake.script(Fault(malformed_after=0))
        s = await client.post("/v1/responses/stream", json=ask())
    assert s.status_code == 200, s.text
    events = responses_events(s.text)
    # nothing had reached the client, so the fallback may answer; the stream ends cleanly
    assert events[-1]["type"] == "response.completed", [e["type"] for e in events]
    assert outcomes(events[-1]["response"]) == [("openai", "stream_cut"), ("anthropic", "ok")]
    assert paths(fake, before) == [OPENAI, ANTHROPIC]
    assert "Traceback" not in r.text + s.text
    rows = await ledger(gw)
    assert len(rows) == 2 and {row.status for row in rows} == {"ok"}
    gw.stop.set()


# -- circuit breaker --------------------------------------------------------------------------


async def test_circuit_opens_after_threshold_skips_openai_then_a_probe_closes_it(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider
) -> None:
    cooldown = 1.0
    gw = await start_live(nursery, tmp_path, fake, failure_threshold=2, cooldown=cooldown)
    health = gw.services.gateway.health
    (openai_id,) = [d.id for d in gw.services.gateway.catalog.resolve("gpt-4.1").deployments]
    async with gw.client() as client:
        for _ in range(2):  # one OpenAI failure per request (then Anthropic answers)
            fake.script(Fault(status=500))
            r = await client.post("/v1/responses", json=ask())
            assert r.status_code == 200, r.text
            assert outcomes(r.json()) == [("openai", "server_error"), ("anthropic", "ok")]
        opened = trio.current_time()
        assert health.snapshot()[openai_id].circuit == "open"

        # open: straight to the fallback, the fake sees nothing for OpenAI
        for _ in range(2):
            before = len(fake.requests)
            r = await client.post("/v1/responses", json=ask())
            assert r.status_code == 200, r.text
            assert outcomes(r.json()) == [("anthropic", "ok")]
            assert paths(fake, before) == [ANTHROPIC]
        assert trio.current_time() - opened < cooldown, "the test itself was too slow"

        # after the cooldown one probe goes to OpenAI; it succeeds and closes the circuit
        await trio.sleep_until(opened + cooldown + 0.05)
        before = len(fake.requests)
        r = await client.post("/v1/responses", json=ask())
        assert r.status_code == 200, r.text
        assert outcomes(r.json()) == [("openai", "ok")]
        assert paths(fake, before) == [OPENAI]
        assert health.snapshot()[openai_id].circuit == "closed"

        before = len(fake.requests)
        r = await client.post("/v1/responses", json=ask())
        assert outcomes(r.json()) == [("openai", "ok")]
        assert paths(fake, before) == [OPENAI]
    gw.stop.set()


async def test_a_failed_probe_reopens_the_circuit(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider
) -> None:
    cooldown = 1.0
    gw = await start_live(nursery, tmp_path, fake, failure_threshold=2, cooldown=cooldown)
    health = gw.services.gateway.health
    (openai_id,) = [d.id for d in gw.services.gateway.catalog.resolve("gpt-4.1").deployments]
    async with gw.client() as client:
        for _ in range(2):
            fake.script(Fault(status=500))
            await client.post("/v1/responses", json=ask())
        opened = trio.current_time()
        assert health.snapshot()[openai_id].circuit == "open"
        await trio.sleep_until(opened + cooldown + 0.05)
        # the probe fails: the circuit opens again at once and the fallback answers
        fake.script(Fault(status=500))
        before = len(fake.requests)
        r = await client.post("/v1/responses", json=ask())
        reopened = trio.current_time()
        assert r.status_code == 200, r.text
        assert outcomes(r.json()) == [("openai", "server_error"), ("anthropic", "ok")]
        assert paths(fake, before) == [OPENAI, ANTHROPIC]
        assert not fake.faults
        assert health.snapshot()[openai_id].circuit == "open"
        before = len(fake.requests)
        r = await client.post("/v1/responses", json=ask())
        assert trio.current_time() - reopened < cooldown, "the test itself was too slow"
        assert outcomes(r.json()) == [("anthropic", "ok")]
        assert paths(fake, before) == [ANTHROPIC]
    gw.stop.set()


# -- the client goes away -----------------------------------------------------------------------


@pytest.mark.parametrize("surface", ["responses", "chat"])
async def test_client_disconnect_mid_stream_closes_upstream_and_records_client_closed(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider, surface: str
) -> None:
    gw = await start_live(nursery, tmp_path, fake, idle=30.0)
    fake.script(Fault(stall_after=3, stall_for=60))
    if surface == "responses":
        # not stored: a stored stream goes on detached (tests/server/test_e2e_resume.py)
        path, body = "/v1/responses/stream", ask(store=False)
        marker = '"response.output_text.delta"'
    else:
        path, body = "/v1/chat/completions", chat(stream=True)
        marker = '"content":"Echo:"'
    async with gw.client() as client:
        with trio.fail_after(10):
            async with client.stream("POST", path, json=body) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if marker in line.replace(" ", ""):
                        break
    # the client is gone: the gateway must hang up on the provider
    await fake.wait_for(lambda f: f.streams_aborted == 1, timeout=5)
    assert fake.client_disconnects >= 1
    assert paths(fake) == [OPENAI]
    row = await eventually_one_row(gw)
    assert (row.status, row.error_code, row.provider) == (
        "client_closed", "client_closed_request", "openai"
    )
    assert row.output_tokens >= 1 and row.input_tokens > 0
    assert row.cost == cost(
        Usage(input_tokens=row.input_tokens, output_tokens=row.output_tokens),
        price_of(gw, "gpt-4.1"),
    )
    gw.stop.set()


# -- slow first byte ------------------------------------------------------------------------------


async def test_slow_first_byte_times_out_and_falls_back_to_another_provider(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider
) -> None:
    """The slow provider would answer after 10 minutes, so an attempt recorded as a
    timeout (and an answer at all) shows the gateway did not wait for it; the client's
    timeout only guards a hang. No timed bound: CI runs loaded."""
    gw = await start_live(nursery, tmp_path, fake, connect=0.3, first_byte=0.3)
    never = Fault(delay=600)
    async with gw.client(timeout=120) as client:
        fake.script(never)
        r = await client.post("/v1/responses", json=ask())
        assert r.status_code == 200, r.text
        # a timeout says the provider may be down: the next attempt is on another provider
        assert outcomes(r.json()) == [("openai", "timeout"), ("anthropic", "ok")]

        fake.script(never, never)
        before = len(fake.requests)
        s = await client.post("/v1/responses/stream", json=ask())
    assert s.status_code == 200, s.text
    events = responses_events(s.text)
    assert events[-1]["type"] == "response.completed"
    # both providers timed out once: the ordinary retry of the last one answers
    assert [(a["provider"], a["outcome"]) for a in events[-1]["response"]["gateway"]["attempts"]] == [
        ("openai", "timeout"), ("anthropic", "timeout"), ("anthropic", "ok")
    ]
    assert paths(fake, before) == [OPENAI, ANTHROPIC, ANTHROPIC]
    # the gateway hung up on each slow call (the deadline only guards a hang)
    await fake.wait_for(lambda f: f.client_disconnects >= 3, timeout=60)
    gw.stop.set()


# -- per-request budget while streaming -----------------------------------------------------------


class IgnoresCap:
    """A provider that drops the output cap before calling upstream (a misbehaving one)."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.name = inner.name
        self.seen_caps: list[int | None] = []

    async def complete(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> Completion:
        self.seen_caps.append(request.max_output_tokens)
        return await self.inner.complete(
            deployment, evolve(request, max_output_tokens=None), timeouts=timeouts
        )

    def stream(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> AsyncIterator[StreamEvent]:
        self.seen_caps.append(request.max_output_tokens)
        return self.inner.stream(deployment, evolve(request, max_output_tokens=None), timeouts=timeouts)


def budget_for(gw: Running, body: dict[str, Any], out_tokens: int) -> tuple[Decimal, int]:
    """A max_cost_usd that pays the estimated input plus `out_tokens` output tokens."""
    price = price_of(gw, body["model"])
    estimate = estimate_request_tokens(parse_responses_request(body))
    max_cost = (estimate * price.input + out_tokens * price.output) / Decimal(1_000_000)
    max_cost += price.output / Decimal(2_000_000)  # half a token of slack
    cap = max_output_tokens_that_fit(max_cost, price, estimate)
    assert cap == out_tokens
    return max_cost, cap


@pytest.mark.parametrize(
    ("model", "field"), [("gpt-4.1", "max_completion_tokens"), ("claude-sonnet-4", "max_tokens")]
)
async def test_budget_caps_max_tokens_sent_upstream_and_the_stream_stops_there(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider, model: str, field: str
) -> None:
    gw = await start_live(nursery, tmp_path, fake)
    body = ask(model=model, text=TEXT)
    max_cost, cap = budget_for(gw, body, 3)
    body["constraints"] = {**ROUTE, "budget": {"max_cost_usd": str(max_cost)}}
    async with gw.client() as client:
        r = await client.post("/v1/responses/stream", json=body)
    assert r.status_code == 200, r.text
    (sent,) = fake.requests
    assert sent.json()[field] == cap
    events = responses_events(r.text)
    assert events[-1]["type"] == "response.incomplete", [e["type"] for e in events]
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert len(deltas) == cap
    row = await only_row(gw)
    assert row.status == "ok" and row.output_tokens == cap
    assert row.cost <= max_cost, (row.cost, max_cost)
    gw.stop.set()


async def test_a_provider_streaming_past_the_cap_is_cut_by_the_gateway(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider
) -> None:
    wrappers: list[IgnoresCap] = []

    def tweak(services: Services) -> None:
        providers = services.gateway.providers
        assert isinstance(providers, dict)
        wrappers.append(IgnoresCap(providers["openai"]))
        providers["openai"] = wrappers[0]

    gw = await start_live(nursery, tmp_path, fake, tweak=tweak)
    body = ask(text=TEXT)
    max_cost, cap = budget_for(gw, body, 3)
    body["constraints"] = {**ROUTE, "budget": {"max_cost_usd": str(max_cost)}}
    fake.script(Fault(chunk_delay=0.05))
    async with gw.client() as client:
        r = await client.post("/v1/responses/stream", json=body)
    assert r.status_code == 200, r.text
    assert wrappers[0].seen_caps == [cap]
    (sent,) = fake.requests
    assert "max_completion_tokens" not in sent.json(), "the stub really dropped the cap"
    events = responses_events(r.text)
    types = [e["type"] for e in events]
    assert types[-1] == "response.incomplete", types
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert len(deltas) == cap, deltas
    # the gateway hung up on the provider instead of reading the whole answer
    await fake.wait_for(lambda f: f.streams_aborted == 1, timeout=5)
    row = await only_row(gw)
    # billed for what upstream was allowed to send (it reported no usage before the cut)
    assert (row.status, row.output_tokens) == ("ok", cap)
    assert row.cost <= max_cost, (row.cost, max_cost, row.output_tokens)
    gw.stop.set()
