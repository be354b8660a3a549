"""The OpenAI, OpenAI-compatible and Anthropic adapters against the fake provider, over
real sockets: answers, usage, every failure kind, timeouts, cuts, early close, redaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from decimal import Decimal

import pytest
import trio

from adapters.providers.base import Provider, ProviderError, Timeouts
from adapters.providers.http_provider import (
    ANTHROPIC,
    OPENAI_CHAT,
    OPENAI_COMPATIBLE,
    HttpProvider,
)
from adapters.providers.transport import H11Transport
from core.catalog import Deployment, Price
from core.model import (
    FailureKind,
    GatewayRequest,
    Message,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageReport,
)
from tests.fakes import FakeProvider, Fault, running_fake_provider

KEY = "sk-test-SECRETSECRET0123456789abcdef"
FAST = Timeouts(connect=2, first_byte=2, idle=2, total=10)
DEP = Deployment(id="x/m", model="m", provider="x", upstream_model="up-model",
                 price=Price(Decimal(1), Decimal(2)), context_window=1000, max_output_tokens=500)
ASK = GatewayRequest(model="m", messages=(
    Message("system", (TextPart("be nice"),)), Message("user", (TextPart("hello there"),)),
))
FORMATS = ["openai", "compatible", "anthropic"]


@asynccontextmanager
async def setup(kind: str) -> AsyncIterator[tuple[FakeProvider, Provider]]:
    transport = H11Transport()
    async with running_fake_provider() as fake:
        provider: Provider
        if kind == "openai":
            provider = HttpProvider(name="openai", dialect=OPENAI_CHAT,
                                    base_url=fake.openai_base_url, api_key=KEY, transport=transport)
        elif kind == "compatible":
            provider = HttpProvider(name="local", dialect=OPENAI_COMPATIBLE,
                                    base_url=fake.openai_base_url, api_key=None, transport=transport)
        else:
            provider = HttpProvider(name="anthropic", dialect=ANTHROPIC, base_url=fake.base_url,
                                    api_key=KEY, transport=transport)
        try:
            yield fake, provider
        finally:
            await transport.aclose()


async def collect(provider: Provider, request: GatewayRequest = ASK,
                  timeouts: Timeouts = FAST) -> list[StreamEvent]:
    out: list[StreamEvent] = []
    async with aclosing(provider.stream(DEP, request, timeouts=timeouts)) as agen:  # type: ignore[type-var]
        async for event in agen:
            out.append(event)
    return out


async def fails(coro_fn: object) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await coro_fn()  # type: ignore[operator]
    return info.value


# input: system "be nice" (2) + user (2 + 4) [+ system message 4 on OpenAI: 2 + 4]
EXPECTED_INPUT = {"openai": 12, "compatible": 12, "anthropic": 12}


@pytest.mark.parametrize("kind", FORMATS)
async def test_complete(kind: str) -> None:
    async with setup(kind) as (fake, provider):
        fake.cached_tokens = 3
        completion = await provider.complete(DEP, ASK, timeouts=FAST)
        assert completion.text == "Echo: hello there" and completion.finish_reason == "stop"
        assert completion.usage == Usage(input_tokens=EXPECTED_INPUT[kind], output_tokens=3,
                                         cached_input_tokens=3)
        sent = fake.requests[-1]
        body = sent.json()
        assert body["model"] == "up-model" and "stream" not in body
        if kind == "anthropic":
            assert sent.path == "/v1/messages" and body["system"] == "be nice"
            assert sent.headers["x-api-key"] == KEY
            assert sent.headers["anthropic-version"] == "2023-06-01"
            assert "authorization" not in sent.headers
        else:
            assert sent.path == "/v1/chat/completions"
            auth = sent.headers.get("authorization")
            assert auth == (f"Bearer {KEY}" if kind == "openai" else None)


@pytest.mark.parametrize("kind", FORMATS)
async def test_stream(kind: str) -> None:
    async with setup(kind) as (fake, provider):
        events = await collect(provider)
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Echo: hello there"
        reports = [e for e in events if isinstance(e, UsageReport)]
        assert reports[-1].usage == Usage(input_tokens=12, output_tokens=3)
        assert events[-1] == StreamEnd("stop")
        await fake.wait_for(lambda f: f.streams_completed == 1)
        body = fake.requests[-1].json()
        assert body["stream"] is True
        if kind != "anthropic":
            assert body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("kind", FORMATS)
async def test_tool_call_complete_and_stream(kind: str) -> None:
    request = GatewayRequest(model="m", messages=(Message("user", (TextPart("please use tool"),)),),
                             tools=(Tool("echo", "echoes", {"type": "object"}),))
    async with setup(kind) as (_, provider):
        completion = await provider.complete(DEP, request, timeouts=FAST)
        assert completion.finish_reason == "tool_calls"
        assert completion.tool_calls == (
            ToolCall("toolu_0" if kind == "anthropic" else "call_0", "echo",
                     '{"text": "please use tool"}'),)
        events = await collect(provider, request)
        deltas = [e for e in events if isinstance(e, ToolCallDelta)]
        assert deltas[0].name == "echo" and {d.index for d in deltas} == {0}
        assert "".join(d.arguments for d in deltas) == '{"text": "please use tool"}'
        assert events[-1] == StreamEnd("tool_calls")


@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize(("fault", "expected", "retry_after"), [
    (Fault(status=429, headers={"retry-after": "3"}), FailureKind.RATE_LIMITED, 3.0),
    (Fault(status=429, headers={"retry-after-ms": "250"}), FailureKind.RATE_LIMITED, 0.25),
    (Fault(status=500), FailureKind.SERVER_ERROR, None),
    (Fault(status=529, headers={"retry-after": "1"}), FailureKind.OVERLOADED, 1.0),
    (Fault(status=503), FailureKind.OVERLOADED, None),
    (Fault(status=400), FailureKind.BAD_REQUEST, None),
    (Fault(status=401), FailureKind.AUTH, None),
    (Fault(status=400, error_code="context_length_exceeded",
           message="This model's maximum context length is 1000 tokens."), FailureKind.CONTEXT_LENGTH, None),
    (Fault(status=400, message="prompt is too long: 2000 tokens > 1000 maximum"),
     FailureKind.CONTEXT_LENGTH, None),
])
async def test_http_failures(kind: str, fault: Fault, expected: FailureKind,
                             retry_after: float | None) -> None:
    async with setup(kind) as (fake, provider):
        fake.script(fault, fault)
        err = await fails(lambda: provider.complete(DEP, ASK, timeouts=FAST))
        assert (err.kind, err.status, err.retry_after) == (expected, fault.status, retry_after)
        err = await fails(lambda: collect(provider))
        assert (err.kind, err.status, err.retry_after) == (expected, fault.status, retry_after)


async def test_openai_rate_limit_reset_headers() -> None:
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m30s"}
    async with setup("openai") as (fake, provider):
        fake.script(Fault(status=429, headers=headers))
        err = await fails(lambda: provider.complete(DEP, ASK, timeouts=FAST))
        assert (err.kind, err.retry_after) == (FailureKind.RATE_LIMITED, 90.0)


@pytest.mark.parametrize("kind", FORMATS)
async def test_slow_first_byte_is_timeout(kind: str) -> None:
    slow = Timeouts(connect=2, first_byte=0.3, idle=2, total=10)
    async with setup(kind) as (fake, provider):
        fake.script(Fault(delay=5), Fault(delay=5))
        with trio.fail_after(60):  # a hang guard: an answer after 5 s would be no timeout
            err = await fails(lambda: provider.complete(DEP, ASK, timeouts=slow))
            assert err.kind is FailureKind.TIMEOUT
            err = await fails(lambda: collect(provider, timeouts=slow))
            assert err.kind is FailureKind.TIMEOUT
        await fake.wait_for(lambda f: f.client_disconnects == 2)


@pytest.mark.parametrize("kind", FORMATS)
async def test_stall_mid_stream_is_idle_timeout(kind: str) -> None:
    idle = Timeouts(connect=2, first_byte=2, idle=0.3, total=10)
    async with setup(kind) as (fake, provider):
        fake.script(Fault(stall_after=3))
        seen: list[StreamEvent] = []
        with trio.fail_after(60), pytest.raises(ProviderError) as info:  # a hang guard
            async with aclosing(provider.stream(DEP, ASK, timeouts=idle)) as agen:  # type: ignore[type-var]
                async for event in agen:
                    seen.append(event)
        assert info.value.kind is FailureKind.TIMEOUT
        assert "chunk" in info.value.message
        assert seen  # some events arrived before the stall
        await fake.wait_for(lambda f: f.streams_aborted == 1)


async def test_idle_longer_than_first_byte_allows_slow_chunks() -> None:
    patient = Timeouts(connect=2, first_byte=0.05, idle=1, total=10)
    async with setup("openai") as (fake, provider):
        fake.script(Fault(chunk_delay=0.15))
        events = await collect(provider, timeouts=patient)
        assert events[-1] == StreamEnd("stop")


async def test_total_deadline_bounds_a_slow_stream() -> None:
    total = Timeouts(connect=2, first_byte=2, idle=1, total=0.5)
    async with setup("anthropic") as (fake, provider):
        fake.script(Fault(chunk_delay=0.2))
        with trio.fail_after(60):  # a hang guard: a stream left to end would be no timeout
            err = await fails(lambda: collect(provider, timeouts=total))
        assert err.kind is FailureKind.TIMEOUT


@pytest.mark.parametrize("kind", FORMATS)
async def test_cut_mid_stream_is_stream_cut(kind: str) -> None:
    async with setup(kind) as (fake, provider):
        fake.script(Fault(cut_after=3))
        err = await fails(lambda: collect(provider))
        assert err.kind is FailureKind.STREAM_CUT
        await fake.wait_for(lambda f: f.streams_cut == 1)


@pytest.mark.parametrize("kind", FORMATS)
async def test_malformed_event_is_stream_cut(kind: str) -> None:
    async with setup(kind) as (fake, provider):
        fake.script(Fault(malformed_after=2))
        err = await fails(lambda: collect(provider))
        assert err.kind is FailureKind.STREAM_CUT


@pytest.mark.parametrize(("kind", "expected"), [
    ("openai", FailureKind.SERVER_ERROR), ("anthropic", FailureKind.OVERLOADED),
])
async def test_error_event_mid_stream(kind: str, expected: FailureKind) -> None:
    async with setup(kind) as (fake, provider):
        fake.script(Fault(error_event_after=3))
        err = await fails(lambda: collect(provider))
        assert err.kind is expected and err.status is None


@pytest.mark.parametrize("kind", FORMATS)
async def test_closing_the_stream_early_closes_the_upstream_connection(kind: str) -> None:
    async with setup(kind) as (fake, provider):
        fake.script(Fault(stall_after=4))
        agen = provider.stream(DEP, ASK, timeouts=FAST)
        first = await agen.__anext__()
        assert first is not None
        await agen.aclose()  # type: ignore[attr-defined]
        await fake.wait_for(lambda f: f.streams_aborted == 1, timeout=2)
        assert fake.streams_completed == 0


async def test_cancelling_the_consumer_closes_the_upstream_connection() -> None:
    async with setup("openai") as (fake, provider):
        fake.script(Fault(stall_after=2))
        with trio.move_on_after(0.3) as scope:
            await collect(provider)
        assert scope.cancelled_caught
        await fake.wait_for(lambda f: f.streams_aborted == 1, timeout=2)


async def test_connections_are_reused() -> None:
    async with setup("openai") as (fake, provider):
        for _ in range(3):
            await provider.complete(DEP, ASK, timeouts=FAST)
            await collect(provider)
        assert fake.connections_opened == 1


async def test_connect_refused_is_connect() -> None:
    transport = H11Transport()
    async with running_fake_provider() as fake:
        url = fake.openai_base_url
    provider = HttpProvider(name="openai", dialect=OPENAI_CHAT, base_url=url, api_key=KEY,
                            transport=transport)  # the server is gone
    err = await fails(lambda: provider.complete(DEP, ASK, timeouts=FAST))
    assert err.kind is FailureKind.CONNECT
    err = await fails(lambda: collect(provider))
    assert err.kind is FailureKind.CONNECT
    await transport.aclose()


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_key_never_in_errors_even_when_echoed(kind: str) -> None:
    echo = Fault(status=401, message="Incorrect API key provided: {api_key}. Check it.")
    async with setup(kind) as (fake, provider):
        fake.script(echo, echo)
        for call in (lambda: provider.complete(DEP, ASK, timeouts=FAST), lambda: collect(provider)):
            err = await fails(call)
            assert err.kind is FailureKind.AUTH
            assert "Incorrect API key provided" in err.message
            for text in (err.message, repr(err), str(err)):
                assert KEY not in text and KEY[-12:] not in text
        assert KEY not in repr(provider)
        assert fake.requests[0].body.find(KEY.encode()) == -1  # never in the body either
