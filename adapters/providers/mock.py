"""The Mock provider: a real provider behind the same interface, with no network.

Owns: deterministic answers for development, demos and tests. In mock mode it serves
every catalog deployment, keeping the deployment's provider label and prices, so routing,
budgets and billing behave as they will with real providers.

Output rule: the answer is "Mock answer from <upstream model>: " followed by the words of
the last user message (or "ok" when there are none), then cycling the words of
`MOCK_FILLER` until `output_tokens` words when a scenario asks for more. It is cut at the
request's `max_output_tokens` words (finish reason "length").

Usage rule (documented so callers can predict bills): one token per whitespace-separated
word of every message's text plus 4 tokens per message for input; one token per output
word for output. Streaming sends one word per chunk.

Scenario controls, per request, in `metadata["mock_scenario"]` as `;`-separated
`name=value` directives (all optional):
  latency_ms=N        wait N ms before answering (before the first chunk when streaming)
  chunk_delay_ms=N    wait N ms between streamed chunks
  fail=KIND           fail with 429 | 500 | 529 | 400 | 401 | timeout | connect | context
  fail_times=N        only the first N calls of this scenario+deployment fail (default: all)
  fail_providers=A,B  only deployments of these provider labels fail (default: all)
  retry_after=S       retry-after seconds reported with fail=429 / 529
  cut_after=K         streaming: the connection drops after K chunks
  output_tokens=N     answer with N words
The call counter behind `fail_times` lives in the provider instance (bounded), so it is
per gateway process.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator

import trio
from attrs import frozen

from adapters.providers.base import ProviderError, Timeouts
from core.catalog import Deployment
from core.model import (
    Completion,
    FailureKind,
    GatewayRequest,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Usage,
    UsageReport,
)

MOCK_FILLER = "the quick brown fox jumps over the lazy dog".split()
_FAILURES: dict[str, tuple[FailureKind, int | None, str]] = {
    "429": (FailureKind.RATE_LIMITED, 429, "mock rate limit"),
    "500": (FailureKind.SERVER_ERROR, 500, "mock server error"),
    "529": (FailureKind.OVERLOADED, 529, "mock overloaded"),
    "400": (FailureKind.BAD_REQUEST, 400, "mock rejected the request"),
    "401": (FailureKind.AUTH, 401, "mock rejected the provider key"),
    "timeout": (FailureKind.TIMEOUT, None, "mock timed out"),
    "connect": (FailureKind.CONNECT, None, "mock connection refused"),
    "context": (FailureKind.CONTEXT_LENGTH, 400, "mock context length exceeded"),
}
_COUNTER_LIMIT = 4096


@frozen
class Scenario:
    latency_ms: int = 0
    chunk_delay_ms: int = 0
    fail: str | None = None
    fail_times: int | None = None
    fail_providers: frozenset[str] | None = None
    retry_after: float | None = None
    cut_after: int | None = None
    output_tokens: int | None = None

    @staticmethod
    def parse(text: str | None) -> Scenario:
        values: dict[str, str] = {}
        for part in (text or "").split(";"):
            name, sep, value = part.partition("=")
            if sep:
                values[name.strip()] = value.strip()
        ints = {k: int(values[k]) for k in ("latency_ms", "chunk_delay_ms") if k in values}
        fail = values.get("fail")
        if fail is not None and fail not in _FAILURES:
            fail = "500"
        providers = values.get("fail_providers")
        return Scenario(
            latency_ms=ints.get("latency_ms", 0),
            chunk_delay_ms=ints.get("chunk_delay_ms", 0),
            fail=fail,
            fail_times=int(values["fail_times"]) if "fail_times" in values else None,
            fail_providers=frozenset(p.strip() for p in providers.split(",")) if providers else None,
            retry_after=float(values["retry_after"]) if "retry_after" in values else None,
            cut_after=int(values["cut_after"]) if "cut_after" in values else None,
            output_tokens=int(values["output_tokens"]) if "output_tokens" in values else None,
        )


def input_tokens(request: GatewayRequest) -> int:
    return sum(len(m.text().split()) + 4 for m in request.messages)


def answer_words(deployment: Deployment, request: GatewayRequest, wanted: int | None) -> list[str]:
    users = [m for m in request.messages if m.role == "user"]
    said = users[-1].text().split() if users else []
    words = ["Mock", "answer", "from", f"{deployment.upstream_model}:", *(said or ["ok"])]
    if wanted is not None:
        words = [*words, *(MOCK_FILLER[i % len(MOCK_FILLER)] for i in range(wanted))][:wanted]
    return words


class MockProvider:
    name = "mock"

    def __init__(self) -> None:
        self._calls: OrderedDict[tuple[str, str], int] = OrderedDict()

    def _maybe_fail(self, deployment: Deployment, request: GatewayRequest, sc: Scenario) -> None:
        if sc.fail is None:
            return
        if sc.fail_providers is not None and deployment.provider not in sc.fail_providers:
            return
        key = (request.metadata.get("mock_scenario", ""), deployment.id)
        count = self._calls.pop(key, 0) + 1
        self._calls[key] = count
        while len(self._calls) > _COUNTER_LIMIT:
            self._calls.popitem(last=False)
        if sc.fail_times is not None and count > sc.fail_times:
            return
        kind, status, message = _FAILURES[sc.fail]
        raise ProviderError(kind, message, status=status, retry_after=sc.retry_after)

    def _plan(
        self, deployment: Deployment, request: GatewayRequest
    ) -> tuple[Scenario, list[str], str, Usage]:
        sc = Scenario.parse(request.metadata.get("mock_scenario"))
        words = answer_words(deployment, request, sc.output_tokens)
        finish = "stop"
        if request.max_output_tokens is not None and len(words) > request.max_output_tokens:
            words, finish = words[: request.max_output_tokens], "length"
        usage = Usage(input_tokens=input_tokens(request), output_tokens=len(words))
        return sc, words, finish, usage

    async def complete(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> Completion:
        sc, words, finish, usage = self._plan(deployment, request)
        await trio.sleep(sc.latency_ms / 1000)
        self._maybe_fail(deployment, request, sc)
        return Completion(
            text=" ".join(words),
            finish_reason="length" if finish == "length" else "stop",
            usage=usage,
            upstream_model=deployment.upstream_model,
        )

    async def stream(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> AsyncIterator[StreamEvent]:
        sc, words, finish, usage = self._plan(deployment, request)
        await trio.sleep(sc.latency_ms / 1000)
        self._maybe_fail(deployment, request, sc)
        yield UsageReport(Usage(input_tokens=usage.input_tokens))
        for i, word in enumerate(words):
            if sc.cut_after is not None and i >= sc.cut_after:
                raise ProviderError(FailureKind.STREAM_CUT, "mock stream cut")
            if i and sc.chunk_delay_ms:
                await trio.sleep(sc.chunk_delay_ms / 1000)
            yield TextDelta(word if i == 0 else " " + word)
        yield UsageReport(usage)
        yield StreamEnd("length" if finish == "length" else "stop")
