"""The Mock provider: a real provider behind the same interface, with no network.

Owns: deterministic answers for development, demos and tests. In mock mode it serves
every catalog deployment, keeping the deployment's provider label and prices, so routing,
budgets and billing behave as they will with real providers.

Output rule: the answer is "Mock answer from <upstream model>: " followed by the words of
the last user message (or "ok" when there are none), then cycling the words of
`MOCK_FILLER` until `output_tokens` words when a scenario asks for more. It is cut at the
request's `max_output_tokens` words (finish reason "length").

Tool-call rule: when the request has tools, the Mock answers with exactly one tool call
(and no text) if `tool_choice` names a tool (that tool, always), or is "required" (the
first tool the conversation has not called yet, else the last tool, so an agent whose
only way to finish is a tool, such as pydantic-ai's `final_result`, does finish), or is
unset / "auto", the last message is not a tool result and the last user message contains
"use tool" (any case; the first tool). `tool_choice` "none" never yields a call, and
with "auto" a tool result as the last message always gets the text answer, so an agent
loop ends. The call has id `MOCK_CALL_ID` and arguments `json.dumps` of the minimal
instance of the tool's parameters (`mock_schema.instance`), except that a tool whose
schema declares no properties (and does not forbid extra ones), or has none, gets
`{"text": <last user message>}`; finish reason "tool_calls". Streamed, the call is one
`ToolCallDelta` carrying id and name, then the arguments in two fragments (split at the
middle of the text) that join to exactly the arguments. Cut at `max_output_tokens` words
like text (the arguments are then the first words of the JSON, finish reason "length").

Structured-output rule: without a tool call, a `response_format` of type json_schema
(from Chat `response_format`, Responses `text.format` or Anthropic
`output_config.format`) is answered with `json.dumps` of the minimal instance of its
schema, and json_object with the minimal instance of the first JSON Schema object
(one with `properties`) written in the messages' text, system messages first (where
instructor's and LangChain's JSON modes put it; at most `SCHEMA_SCAN` candidates per
message are tried), else `{}`: JSON that validates, whatever was asked. Streamed, the
JSON text comes in pieces split at its spaces (joining them gives the text exactly).

Usage rule (documented so callers can predict bills): one token per whitespace-separated
word of every message's text plus 4 tokens per message for input; one token per output
word for output: the answer's (or the JSON text's) whitespace-separated words, or for a tool call the whitespace-separated words of
its arguments JSON (`{"text": "use tool now"}` is 4 tokens). Streaming sends one word of
text per chunk (a tool call is the three chunks above).

Scenario controls, per request, in `metadata["mock_scenario"]` (the server also takes
them from the `x-umg-mock-scenario` header) as `;`-separated `name=value` directives
(all optional; N is a whole number >= 0):
  latency_ms=N        wait N ms (at most 60000) before answering (before the first chunk
                      when streaming)
  chunk_delay_ms=N    wait N ms (at most 60000) between streamed chunks
  fail=KIND           fail with 429 | 500 | 529 | 400 | 401 | timeout | connect | context
  fail_times=N        only the first N calls of this scenario+deployment fail (default: all)
  fail_providers=A,B  only deployments of these provider labels fail (default: all)
  retry_after=S       retry-after seconds (0 to 3600) reported with fail=429 / 529
  cut_after=K         streaming: the connection drops after K chunks
  output_tokens=N     answer with N words (at most 100000)
An unknown directive, a part without `=`, or a bad value is the caller's mistake:
`Scenario.parse` raises `InvalidRequest` naming `metadata.mock_scenario` (`check_request`,
which the driver calls at admission, so every surface answers 400 before any stream starts); should one still
reach the provider, it fails with a non-retryable `bad_request`.
The call counter behind `fail_times` lives in the provider instance (bounded), so it is
per gateway process.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import AsyncIterator

import trio
from attrs import frozen

from adapters.providers.base import ProviderError, Timeouts
from adapters.providers.mock_schema import instance
from core.catalog import Deployment
from core.errors import InvalidRequest
from core.model import (
    Completion,
    FailureKind,
    FinishReason,
    GatewayRequest,
    JSONValue,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageReport,
)

MOCK_FILLER = "the quick brown fox jumps over the lazy dog".split()
MOCK_CALL_ID = "call_mock_0"
SCENARIO_PARAM = "metadata.mock_scenario"
SCENARIO_HEADER = "x-umg-mock-scenario"
MAX_DELAY_MS = 60_000
MAX_OUTPUT_TOKENS = 100_000
MAX_RETRY_AFTER = 3600.0
MAX_SCENARIO_CHARS = 512
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
_INT_LIMITS: dict[str, int | None] = {
    "latency_ms": MAX_DELAY_MS,
    "chunk_delay_ms": MAX_DELAY_MS,
    "fail_times": None,
    "cut_after": None,
    "output_tokens": MAX_OUTPUT_TOKENS,
}
_NAMES = frozenset({*_INT_LIMITS, "fail", "fail_providers", "retry_after"})
_COUNTER_LIMIT = 4096
SCHEMA_SCAN = 64  # "{" positions tried per message when looking for a JSON Schema


def _bad(problem: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid mock scenario (metadata.mock_scenario or the {SCENARIO_HEADER} header): "
        f"{problem}",
        param=SCENARIO_PARAM,
    )


def _int(name: str, value: str) -> int:
    limit = _INT_LIMITS[name]
    bound = "" if limit is None else f" to {limit}"
    if not value.isascii() or not value.isdigit() or (limit is not None and int(value) > limit):
        raise _bad(f"{name} must be a whole number from 0{bound}, got {value!r}")
    return int(value)


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (0 <= seconds <= MAX_RETRY_AFTER):  # also rejects nan
        raise _bad(f"{name} must be a number of seconds from 0 to {MAX_RETRY_AFTER:g}, got {value!r}")
    return seconds


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
        """Parse directives; raises InvalidRequest (param `metadata.mock_scenario`)."""
        text = text or ""
        if len(text) > MAX_SCENARIO_CHARS:
            raise _bad(f"at most {MAX_SCENARIO_CHARS} characters, got {len(text)}")
        values: dict[str, str] = {}
        for part in text.split(";"):
            if not part.strip():
                continue
            name, sep, value = (s.strip() for s in part.partition("="))
            if not sep:
                raise _bad(f"expected name=value, got {part.strip()!r}")
            if name not in _NAMES:
                raise _bad(f"unknown directive {name!r}; known: {', '.join(sorted(_NAMES))}")
            if name in values:
                raise _bad(f"{name} is given twice")
            values[name] = value
        ints = {name: _int(name, values[name]) for name in _INT_LIMITS if name in values}
        fail = values.get("fail")
        if fail is not None and fail not in _FAILURES:
            raise _bad(f"fail must be one of {' | '.join(_FAILURES)}, got {fail!r}")
        providers: frozenset[str] | None = None
        if "fail_providers" in values:
            providers = frozenset(p.strip() for p in values["fail_providers"].split(","))
            if "" in providers:
                raise _bad(f"fail_providers must be provider labels separated by commas, got "
                           f"{values['fail_providers']!r}")
        retry = values.get("retry_after")
        return Scenario(
            latency_ms=ints.get("latency_ms", 0),
            chunk_delay_ms=ints.get("chunk_delay_ms", 0),
            fail=fail,
            fail_times=ints.get("fail_times"),
            fail_providers=providers,
            retry_after=_seconds("retry_after", retry) if retry is not None else None,
            cut_after=ints.get("cut_after"),
            output_tokens=ints.get("output_tokens"),
        )


def check_scenario(request: GatewayRequest) -> None:
    """Raise InvalidRequest when the request's mock scenario is malformed."""
    Scenario.parse(request.metadata.get("mock_scenario"))


def input_tokens(request: GatewayRequest) -> int:
    return sum(len(m.text().split()) + 4 for m in request.messages)


def last_user_text(request: GatewayRequest) -> str:
    users = [m for m in request.messages if m.role == "user"]
    return users[-1].text() if users else ""


def answer_words(deployment: Deployment, request: GatewayRequest, wanted: int | None) -> list[str]:
    said = last_user_text(request).split()
    words = ["Mock", "answer", "from", f"{deployment.upstream_model}:", *(said or ["ok"])]
    if wanted is not None:
        words = [*words, *(MOCK_FILLER[i % len(MOCK_FILLER)] for i in range(wanted))][:wanted]
    return words


def tool_to_call(request: GatewayRequest) -> str | None:
    """The tool the Mock calls for this request (the tool-call rule), or None for text."""
    if not request.tools:
        return None
    choice = request.tool_choice
    mode = choice.mode if choice is not None else "auto"
    if mode == "tool" and choice is not None and choice.name:
        return choice.name
    if mode == "required":
        called = {c.name for m in request.messages for c in m.tool_calls}
        fresh = [t.name for t in request.tools if t.name not in called]
        return fresh[0] if fresh else request.tools[-1].name
    after_result = bool(request.messages) and request.messages[-1].role == "tool"
    if mode == "none" or after_result or "use tool" not in last_user_text(request).lower():
        return None
    return request.tools[0].name


def tool_arguments(request: GatewayRequest, name: str) -> str:
    """The JSON text of the Mock's call to tool `name` (see the tool-call rule)."""
    schema = next((t.parameters for t in request.tools if t.name == name), None)
    echo = not isinstance(schema, dict) or (
        not schema.get("properties") and schema.get("additionalProperties") is not False
        and not schema.get("required")
    )
    return json.dumps({"text": last_user_text(request)} if echo else instance(schema))


def schema_in_text(request: GatewayRequest) -> JSONValue:
    """The first JSON Schema object (with `properties`) written in the messages' text."""
    decoder = json.JSONDecoder()
    ordered = sorted(request.messages, key=lambda m: m.role != "system")
    for message in ordered:
        text = message.text()
        start = text.find("{")
        for _ in range(SCHEMA_SCAN):
            if start < 0:
                break
            try:
                found, _end = decoder.raw_decode(text, start)
            except ValueError:
                found = None
            if isinstance(found, dict) and isinstance(found.get("properties"), dict):
                return found
            start = text.find("{", start + 1)
    return None


def structured_text(request: GatewayRequest) -> str | None:
    """The Mock's JSON answer for a structured-output request, or None for prose."""
    response_format = request.response_format
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return json.dumps(instance(schema_in_text(request) or {}))
    if kind != "json_schema":
        return None
    inner = response_format.get("json_schema")
    schema = inner.get("schema") if isinstance(inner, dict) else None
    return json.dumps(instance(schema) if schema is not None else {})


@frozen
class _Plan:
    scenario: Scenario
    words: list[str]  # the text answer's words (empty for a tool call)
    call: ToolCall | None
    finish: FinishReason
    usage: Usage


class MockProvider:
    name = "mock"

    def __init__(self) -> None:
        self._calls: OrderedDict[tuple[str, str], int] = OrderedDict()

    def check_request(self, request: GatewayRequest) -> None:
        """The driver's pre-call check (adapters/driver.py `ChecksRequests`): a malformed
        scenario is the caller's 400, before any call or byte."""
        check_scenario(request)

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

    def _plan(self, deployment: Deployment, request: GatewayRequest) -> _Plan:
        try:
            sc = Scenario.parse(request.metadata.get("mock_scenario"))
        except InvalidRequest as err:
            raise ProviderError(FailureKind.BAD_REQUEST, err.message, status=400) from err
        cap = request.max_output_tokens
        name = tool_to_call(request)
        if name is not None:
            arguments = tool_arguments(request, name)
            pieces = arguments.split()
            finish: FinishReason = "tool_calls"
            if cap is not None and len(pieces) > cap:
                pieces, finish = pieces[:cap], "length"
                arguments = " ".join(pieces)
            usage = Usage(input_tokens=input_tokens(request), output_tokens=len(pieces))
            return _Plan(sc, [], ToolCall(MOCK_CALL_ID, name, arguments), finish, usage)
        structured = structured_text(request)
        if structured is not None:
            return self._json_plan(sc, structured, request)
        words = answer_words(deployment, request, sc.output_tokens)
        finish = "stop"
        if cap is not None and len(words) > cap:
            words, finish = words[:cap], "length"
        usage = Usage(input_tokens=input_tokens(request), output_tokens=len(words))
        return _Plan(sc, words, None, finish, usage)

    @staticmethod
    def _json_plan(sc: Scenario, text: str, request: GatewayRequest) -> _Plan:
        pieces = text.split(" ")  # " ".join(pieces) == text, consecutive spaces included
        finish: FinishReason = "stop"
        cap = request.max_output_tokens
        if cap is not None and len(text.split()) > cap:
            kept = " ".join(text.split()[:cap])
            pieces, finish = kept.split(" "), "length"
        tokens = len(" ".join(pieces).split())
        usage = Usage(input_tokens=input_tokens(request), output_tokens=tokens)
        return _Plan(sc, pieces, None, finish, usage)

    async def complete(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> Completion:
        plan = self._plan(deployment, request)
        await trio.sleep(plan.scenario.latency_ms / 1000)
        self._maybe_fail(deployment, request, plan.scenario)
        return Completion(
            text=" ".join(plan.words),
            finish_reason=plan.finish,
            usage=plan.usage,
            tool_calls=(plan.call,) if plan.call is not None else (),
            upstream_model=deployment.upstream_model,
        )

    async def stream(
        self, deployment: Deployment, request: GatewayRequest, *, timeouts: Timeouts
    ) -> AsyncIterator[StreamEvent]:
        plan = self._plan(deployment, request)
        sc = plan.scenario
        await trio.sleep(sc.latency_ms / 1000)
        self._maybe_fail(deployment, request, sc)
        yield UsageReport(Usage(input_tokens=plan.usage.input_tokens))
        chunks: list[StreamEvent]
        if plan.call is not None:
            args, half = plan.call.arguments, len(plan.call.arguments) // 2
            chunks = [
                ToolCallDelta(0, id=plan.call.id, name=plan.call.name),
                ToolCallDelta(0, arguments=args[:half]),
                ToolCallDelta(0, arguments=args[half:]),
            ]
        else:
            chunks = [TextDelta(w if i == 0 else " " + w) for i, w in enumerate(plan.words)]
        for i, chunk in enumerate(chunks):
            if sc.cut_after is not None and i >= sc.cut_after:
                raise ProviderError(FailureKind.STREAM_CUT, "mock stream cut")
            if i and sc.chunk_delay_ms:
                await trio.sleep(sc.chunk_delay_ms / 1000)
            yield chunk
        yield UsageReport(plan.usage)
        yield StreamEnd(plan.finish)
