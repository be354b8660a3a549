"""The Mock provider's documented rules: tool calls, usage, streaming pieces, scenarios."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import trio

from adapters.providers.base import ProviderError, Timeouts
from adapters.providers.mock import (
    MAX_DELAY_MS,
    MOCK_CALL_ID,
    MockProvider,
    Scenario,
    check_scenario,
    tool_to_call,
)
from core.catalog import Deployment, Price
from core.errors import InvalidRequest
from core.model import (
    Completion,
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
    ToolChoice,
    UsageReport,
)

DEP = Deployment(
    id="openai/gpt-4.1", model="gpt-4.1", provider="openai", upstream_model="gpt-4.1-2025",
    price=Price(Decimal(2), Decimal(8)), context_window=128000, max_output_tokens=32768,
)
TOOLS = (Tool("lookup", "find things", {"type": "object"}), Tool("weather"))


def user(text: str) -> Message:
    return Message("user", (TextPart(text),))


def req(
    *messages: Message,
    tools: tuple[Tool, ...] = TOOLS,
    choice: ToolChoice | None = None,
    scenario: str | None = None,
    max_output_tokens: int | None = None,
) -> GatewayRequest:
    return GatewayRequest(
        model="gpt-4.1",
        messages=messages,
        tools=tools,
        tool_choice=choice,
        max_output_tokens=max_output_tokens,
        metadata={} if scenario is None else {"mock_scenario": scenario},
    )


async def whole(request: GatewayRequest) -> Completion:
    return await MockProvider().complete(DEP, request, timeouts=Timeouts())


async def streamed(request: GatewayRequest, provider: MockProvider | None = None) -> list[StreamEvent]:
    agen = (provider or MockProvider()).stream(DEP, request, timeouts=Timeouts())
    return [event async for event in agen]


# ---- the tool-call rule ------------------------------------------------------------------

def called(name: str) -> Message:
    return Message("assistant", tool_calls=(ToolCall(MOCK_CALL_ID, name, "{}"),))


def result() -> Message:
    return Message("tool", (TextPart("42"),), tool_call_id=MOCK_CALL_ID)


TOOL_RULE = [
    # (messages, tools, tool_choice, expected tool or None for a text answer)
    ((user("hello"),), TOOLS, None, None),
    ((user("please use tool now"),), TOOLS, None, "lookup"),
    ((user("Please USE TOOL now"),), TOOLS, ToolChoice("auto"), "lookup"),
    ((user("please use tool now"),), (), None, None),
    ((user("please use tool now"),), TOOLS, ToolChoice("none"), None),
    ((user("hello"),), TOOLS, ToolChoice("none"), None),
    ((user("hello"),), TOOLS, ToolChoice("required"), "lookup"),
    ((user("hello"),), TOOLS, ToolChoice("tool", "weather"), "weather"),
    ((user("use tool"),), TOOLS, ToolChoice("tool", "weather"), "weather"),
    # a tool result last: a text answer with auto (the loop ends) ...
    ((user("use tool"), Message("tool", (TextPart("42"),), tool_call_id=MOCK_CALL_ID)),
     TOOLS, None, None),
    # ... a call whenever the choice demands one: named -> that tool; required -> the
    # first tool not called yet in the conversation, else the last tool
    ((user("use tool"), Message("tool", (TextPart("42"),), tool_call_id=MOCK_CALL_ID)),
     TOOLS, ToolChoice("tool", "weather"), "weather"),
    ((user("go"), called("lookup"), result()), TOOLS, ToolChoice("required"), "weather"),
    ((user("go"), called("lookup"), result(), called("weather"), result()),
     TOOLS, ToolChoice("required"), "weather"),
    ((user("go"), called("weather"), result()), TOOLS, ToolChoice("required"), "lookup"),
    # a tool result earlier, a new user turn last: the rule applies again
    (
        (
            user("hi"),
            Message("tool", (TextPart("42"),), tool_call_id=MOCK_CALL_ID),
            user("now use tool again"),
        ),
        TOOLS, None, "lookup",
    ),
    ((), TOOLS, ToolChoice("required"), "lookup"),
]


@pytest.mark.parametrize(("messages", "tools", "choice", "expected"), TOOL_RULE)
async def test_tool_call_rule(
    messages: tuple[Message, ...],
    tools: tuple[Tool, ...],
    choice: ToolChoice | None,
    expected: str | None,
) -> None:
    request = req(*messages, tools=tools, choice=choice)
    assert tool_to_call(request) == expected
    completion = await whole(request)
    if expected is None:
        assert completion.tool_calls == ()
        assert completion.finish_reason == "stop"
        assert completion.text.startswith("Mock answer from gpt-4.1-2025:")
        return
    users = [m for m in messages if m.role == "user"]
    said = users[-1].text() if users else ""
    assert completion.text == ""
    assert completion.finish_reason == "tool_calls"
    assert len(completion.tool_calls) == 1
    call = completion.tool_calls[0]
    assert (call.id, call.name) == (MOCK_CALL_ID, expected)
    assert json.loads(call.arguments) == {"text": said}
    assert call.arguments == json.dumps({"text": said})


USAGE = [
    # (user text, expected output tokens = words of the arguments JSON)
    ("use tool", 3),  # {"text": "use tool"}
    ("please use tool now", 5),  # {"text": "please use tool now"}
    # escaped newline and tab glue words together in the JSON: {"text": "use tool\n\tplease   now"}
    ("use tool\n\tplease   now", 4),
]


@pytest.mark.parametrize(("text", "output_tokens"), USAGE)
async def test_tool_call_usage_rule(text: str, output_tokens: int) -> None:
    request = req(user(text), Message("assistant", (TextPart("earlier answer"),)), user(text))
    completion = await whole(request)
    arguments = completion.tool_calls[0].arguments
    assert completion.usage.output_tokens == len(arguments.split()) == output_tokens
    # input: words of every message's text + 4 per message
    assert completion.usage.input_tokens == 2 * len(text.split()) + 2 + 3 * 4


@pytest.mark.parametrize(
    "choice", [None, ToolChoice("required"), ToolChoice("tool", "weather")]
)
async def test_streamed_tool_call_is_a_start_piece_and_two_fragments(
    choice: ToolChoice | None,
) -> None:
    request = req(user("go on, use tool with some words"), choice=choice)
    expected = await whole(request)
    events = await streamed(request)
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert len(deltas) == 3
    first, *fragments = deltas
    assert (first.index, first.id, first.name, first.arguments) == (
        0, MOCK_CALL_ID, expected.tool_calls[0].name, ""
    )
    assert all(f.index == 0 and f.id is None and f.name is None and f.arguments for f in fragments)
    assert "".join(f.arguments for f in fragments) == expected.tool_calls[0].arguments
    assert not any(isinstance(e, TextDelta) for e in events)
    reports = [e for e in events if isinstance(e, UsageReport)]
    assert reports[-1].usage == expected.usage
    assert events[-1] == StreamEnd("tool_calls")
    assert events[-2] == reports[-1]


async def test_streamed_tool_call_obeys_cut_after() -> None:
    events: list[StreamEvent] = []
    agen = MockProvider().stream(DEP, req(user("use tool"), scenario="cut_after=2"), timeouts=Timeouts())
    with pytest.raises(ProviderError) as info:
        async for event in agen:
            events.append(event)
    assert info.value.kind is FailureKind.STREAM_CUT
    assert [type(e) for e in events] == [UsageReport, ToolCallDelta, ToolCallDelta]


async def test_tool_call_cut_at_max_output_tokens() -> None:
    request = req(user("please use tool now"), max_output_tokens=2)
    completion = await whole(request)
    assert completion.finish_reason == "length"
    assert completion.tool_calls[0].arguments == '{"text": "please'
    assert completion.usage.output_tokens == 2
    events = await streamed(request)
    assert events[-1] == StreamEnd("length")
    joined = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
    assert joined == '{"text": "please'


async def test_text_answer_unchanged_without_tools() -> None:
    completion = await whole(req(user("one two"), tools=()))
    assert completion.text == "Mock answer from gpt-4.1-2025: one two"
    assert completion.usage.output_tokens == 6
    events = await streamed(req(user("one two"), tools=()))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == completion.text
    assert events[-1] == StreamEnd("stop")


# ---- scenarios ---------------------------------------------------------------------------

GOOD = [
    ("", Scenario()),
    (" ; ", Scenario()),
    ("latency_ms=5; chunk_delay_ms=0", Scenario(latency_ms=5)),
    (f"latency_ms={MAX_DELAY_MS}", Scenario(latency_ms=MAX_DELAY_MS)),
    (
        "fail=429;retry_after=1.5;fail_times=2;fail_providers=openai, anthropic",
        Scenario(fail="429", retry_after=1.5, fail_times=2,
                 fail_providers=frozenset({"openai", "anthropic"})),
    ),
    ("cut_after=0;output_tokens=7", Scenario(cut_after=0, output_tokens=7)),
    ("fail=timeout", Scenario(fail="timeout")),
]


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_good_scenarios_parse(text: str, expected: Scenario) -> None:
    assert Scenario.parse(text) == expected


BAD = [
    ("latency_ms=abc", "latency_ms"),
    ("latency_ms=-5", "latency_ms"),
    ("latency_ms=1.5", "latency_ms"),
    (f"latency_ms={MAX_DELAY_MS + 1}", "latency_ms"),
    ("chunk_delay_ms=999999999", "chunk_delay_ms"),
    ("fail_times=-1", "fail_times"),
    ("cut_after=two", "cut_after"),
    ("output_tokens=100000000", "output_tokens"),
    ("fail=418", "fail"),
    ("fail=", "fail"),
    ("retry_after=soon", "retry_after"),
    ("retry_after=-1", "retry_after"),
    ("retry_after=nan", "retry_after"),
    ("retry_after=inf", "retry_after"),
    ("fail_providers=a,,b", "fail_providers"),
    ("latncy_ms=5", "latncy_ms"),
    ("latency_ms", "name=value"),
    ("latency_ms=1;latency_ms=2", "twice"),
    ("output_tokens=" + "9" * 600, "512"),
]


@pytest.mark.parametrize(("text", "named"), BAD)
async def test_bad_scenarios_are_invalid_requests(text: str, named: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        Scenario.parse(text)
    err = info.value
    assert err.status == 400
    assert err.param == "metadata.mock_scenario"
    assert "metadata.mock_scenario" in err.message and named in err.message
    with pytest.raises(InvalidRequest):
        check_scenario(req(user("hi"), scenario=text))
    # reaching the provider anyway, it is a non-retryable bad request, never a 500
    for call in (whole, streamed):
        with pytest.raises(ProviderError) as failed:
            await call(req(user("hi"), scenario=text))
        assert failed.value.kind is FailureKind.BAD_REQUEST
        assert failed.value.status == 400
        assert "metadata.mock_scenario" in failed.value.message


async def test_fail_times_then_tool_call() -> None:
    provider = MockProvider()
    request = req(user("use tool"), scenario="fail=429;retry_after=1;fail_times=1")
    with pytest.raises(ProviderError) as info:
        await streamed(request, provider)
    assert (info.value.kind, info.value.retry_after) == (FailureKind.RATE_LIMITED, 1.0)
    events = await streamed(request, provider)
    assert events[-1] == StreamEnd("tool_calls")


async def test_latency_applies_to_tool_calls(autojump_clock: trio.abc.Clock) -> None:
    start = trio.current_time()
    await whole(req(user("use tool"), scenario="latency_ms=1500"))
    assert trio.current_time() - start == pytest.approx(1.5)
