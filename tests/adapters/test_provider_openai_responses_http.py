"""The OpenAI Responses adapter against the fake provider over real sockets: answers,
usage, tool calls, the length finish, failure kinds, cuts, early close, redaction."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from decimal import Decimal

import pytest
import trio

from adapters.providers.base import ProviderError, Timeouts
from adapters.providers.http_provider import OPENAI_RESPONSES, HttpProvider
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
# instructions "be nice" as a system message (2 + 4) + the user message (2 + 4)
ASK_INPUT = 12


@asynccontextmanager
async def setup() -> AsyncIterator[tuple[FakeProvider, HttpProvider]]:
    transport = H11Transport()
    async with running_fake_provider() as fake:
        provider = HttpProvider(name="openai", dialect=OPENAI_RESPONSES,
                                base_url=fake.openai_base_url, api_key=KEY, transport=transport)
        try:
            yield fake, provider
        finally:
            await transport.aclose()


async def collect(provider: HttpProvider, request: GatewayRequest = ASK,
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


async def test_complete_posts_to_responses() -> None:
    async with setup() as (fake, provider):
        fake.cached_tokens = 3
        completion = await provider.complete(DEP, ASK, timeouts=FAST)
        assert completion.text == "Echo: hello there" and completion.finish_reason == "stop"
        assert completion.usage == Usage(input_tokens=ASK_INPUT, output_tokens=3,
                                         cached_input_tokens=3)
        assert completion.upstream_id == "resp_fake_1"
        sent = fake.requests[-1]
        assert sent.path == "/v1/responses"
        assert sent.headers["authorization"] == f"Bearer {KEY}"
        body = sent.json()
        assert body["model"] == "up-model" and body["instructions"] == "be nice"
        assert body["store"] is False and "stream" not in body and "messages" not in body


async def test_stream() -> None:
    async with setup() as (fake, provider):
        fake.cached_tokens = 2
        events = await collect(provider)
        texts = [e.text for e in events if isinstance(e, TextDelta)]
        assert texts == ["Echo:", " hello", " there"]  # one delta per word, none lost
        assert events[-2:] == [
            UsageReport(Usage(input_tokens=ASK_INPUT, output_tokens=3, cached_input_tokens=2)),
            StreamEnd("stop"),
        ]
        await fake.wait_for(lambda f: f.streams_completed == 1)
        assert fake.requests[-1].json()["stream"] is True


async def test_length_finish_complete_and_stream() -> None:
    request = GatewayRequest(model="m", messages=(Message("user", (TextPart("a b c d e"),)),),
                             max_output_tokens=2)
    async with setup() as (fake, provider):
        completion = await provider.complete(DEP, request, timeouts=FAST)
        assert (completion.text, completion.finish_reason) == ("Echo: a", "length")
        assert fake.requests[-1].json()["max_output_tokens"] == 2
        events = await collect(provider, request)
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Echo: a"
        assert events[-1] == StreamEnd("length")


async def test_tool_call_complete_and_stream() -> None:
    request = GatewayRequest(model="m", messages=(Message("user", (TextPart("please use tool"),)),),
                             tools=(Tool("echo", "echoes", {"type": "object"}),))
    async with setup() as (fake, provider):
        completion = await provider.complete(DEP, request, timeouts=FAST)
        assert completion.finish_reason == "tool_calls"
        assert completion.tool_calls == (ToolCall("call_0", "echo", '{"text": "please use tool"}'),)
        assert fake.requests[-1].json()["tools"] == [
            {"type": "function", "name": "echo", "description": "echoes",
             "parameters": {"type": "object"}, "strict": False}]
        events = await collect(provider, request)
        deltas = [e for e in events if isinstance(e, ToolCallDelta)]
        assert (deltas[0].id, deltas[0].name) == ("call_0", "echo")
        assert {d.index for d in deltas} == {0} and len(deltas) == 3  # start + two fragments
        assert "".join(d.arguments for d in deltas) == '{"text": "please use tool"}'
        assert events[-1] == StreamEnd("tool_calls")


@pytest.mark.parametrize(("fault", "expected", "retry_after"), [
    (Fault(status=429, headers={"retry-after": "3"}), FailureKind.RATE_LIMITED, 3.0),
    (Fault(status=500), FailureKind.SERVER_ERROR, None),
    (Fault(status=503), FailureKind.OVERLOADED, None),
    (Fault(status=400), FailureKind.BAD_REQUEST, None),
    (Fault(status=401), FailureKind.AUTH, None),
    (Fault(status=400, error_code="context_length_exceeded",
           message="Your input exceeds the context window of this model."),
     FailureKind.CONTEXT_LENGTH, None),
])
async def test_http_failures(fault: Fault, expected: FailureKind, retry_after: float | None) -> None:
    async with setup() as (fake, provider):
        fake.script(fault, fault)
        err = await fails(lambda: provider.complete(DEP, ASK, timeouts=FAST))
        assert (err.kind, err.status, err.retry_after) == (expected, fault.status, retry_after)
        err = await fails(lambda: collect(provider))
        assert (err.kind, err.status, err.retry_after) == (expected, fault.status, retry_after)


@pytest.mark.parametrize(("fault", "expected"), [
    (Fault(error_event_after=4), FailureKind.SERVER_ERROR),
    (Fault(cut_after=4), FailureKind.STREAM_CUT),
    (Fault(malformed_after=2), FailureKind.STREAM_CUT),
])
async def test_mid_stream_failures(fault: Fault, expected: FailureKind) -> None:
    async with setup() as (fake, provider):
        fake.script(fault)
        seen: list[StreamEvent] = []
        with pytest.raises(ProviderError) as info:
            async with aclosing(provider.stream(DEP, ASK, timeouts=FAST)) as agen:  # type: ignore[type-var]
                async for event in agen:
                    seen.append(event)
        assert info.value.kind is expected and info.value.status is None
        assert not any(isinstance(e, StreamEnd) for e in seen)


async def test_stall_mid_stream_is_idle_timeout_and_closes_upstream() -> None:
    idle = Timeouts(connect=2, first_byte=2, idle=0.3, total=10)
    async with setup() as (fake, provider):
        fake.script(Fault(stall_after=5))
        with trio.fail_after(60):  # a hang guard
            err = await fails(lambda: collect(provider, timeouts=idle))
        assert err.kind is FailureKind.TIMEOUT
        await fake.wait_for(lambda f: f.streams_aborted == 1)


async def test_connections_are_reused() -> None:
    async with setup() as (fake, provider):
        for _ in range(3):
            await provider.complete(DEP, ASK, timeouts=FAST)
            await collect(provider)
        assert fake.connections_opened == 1


async def test_key_never_in_errors_even_when_echoed() -> None:
    echo = Fault(status=401, message="Incorrect API key provided: {api_key}. Check it.")
    async with setup() as (fake, provider):
        fake.script(echo, echo)
        for call in (lambda: provider.complete(DEP, ASK, timeouts=FAST), lambda: collect(provider)):
            err = await fails(call)
            assert err.kind is FailureKind.AUTH
            assert "Incorrect API key provided" in err.message
            for text in (err.message, repr(err), str(err)):
                assert KEY not in text and KEY[-12:] not in text
        assert KEY not in repr(provider)
        assert fake.requests[0].body.find(KEY.encode()) == -1


async def test_a_failed_response_object_is_a_failure_by_its_code() -> None:
    failed = {"id": "resp_x", "object": "response", "status": "failed", "output": [],
              "error": {"code": "rate_limit_exceeded", "message": "slow down, key " + KEY}}
    async with setup() as (fake, provider):
        fake.script(Fault(status=200, body=json.dumps(failed).encode()))
        err = await fails(lambda: provider.complete(DEP, ASK, timeouts=FAST))
        assert err.kind is FailureKind.RATE_LIMITED
        assert "slow down" in err.message and KEY not in err.message
