"""Token estimates: documented rule, leaning high, monotone, cheap."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.model import GatewayRequest, ImagePart, Message, TextPart, Tool, ToolCall
from core.tokens import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    REPLY_PRIMING,
    TOOL_CALL_OVERHEAD,
    TOOL_OVERHEAD,
    estimate_request_tokens,
    estimate_text_tokens,
)

TEXTS = [
    ("", 0),
    ("a", 1),
    ("hello", 2),  # 5 bytes -> ceil(5/3)
    ("Hello, world!", 5),  # 13 bytes -> 5 (pieces: Hello , world ! = 4)
    ("x=1;y=2;", 8),  # 8 bytes -> 3, but 8 pieces
    ("日本語", 3),  # 9 bytes -> 3
    ("a b c d e f", 6),  # 11 bytes -> 4, 6 pieces
    ("é" * 3, 2),  # 6 bytes -> 2, 1 piece
]


@pytest.mark.parametrize(("text", "expected"), TEXTS)
def test_text_table(text: str, expected: int) -> None:
    assert estimate_text_tokens(text) == expected


@given(st.text(), st.text())
def test_text_estimate_is_monotone_when_text_grows(a: str, b: str) -> None:
    assert estimate_text_tokens(a) <= estimate_text_tokens(a + b)
    assert estimate_text_tokens(b) <= estimate_text_tokens(a + b)


@given(st.text())
def test_text_estimate_is_above_lower_bounds(text: str) -> None:
    n = estimate_text_tokens(text)
    assert n >= len(text.split()) / 2
    assert n >= len(text.encode("utf-8")) / 4  # ~4 bytes per token on English
    assert (n == 0) == (text == "")


def _by_the_rule(text: str) -> int:
    """The documented rule itself: max(ceil(utf8 bytes / 3), pieces)."""
    if not text:
        return 0
    pieces = len(re.findall(r"\w+|[^\w\s]", text))
    return max(-(-len(text.encode("utf-8", "surrogatepass")) // 3), pieces)


# ASCII prose and code with every kind of whitespace (the shortcut's case), and any text
_ASCII = st.text(st.sampled_from("ab Z9_ \n\t\r\x0b\x0c\x1c\x1f.,;(){}=-'\"!"), max_size=400)


@given(st.one_of(_ASCII, st.text()))
def test_text_estimate_is_exactly_the_rule(text: str) -> None:
    # the regex-free shortcut for ASCII text (`_pieces_bound`) never changes the answer
    assert estimate_text_tokens(text) == _by_the_rule(text)


@pytest.mark.parametrize("text", [
    "The quick brown fox jumps over the lazy dog. " * 20,  # bytes / 3 wins: the shortcut
    "x=1;y=2;" * 50,  # pieces win: the scan
    "a\x1cb\x1fc " * 30,  # separators that are whitespace to `\s`
])
def test_text_estimate_is_the_rule_on_both_sides_of_the_shortcut(text: str) -> None:
    assert estimate_text_tokens(text) == _by_the_rule(text)


def test_english_prose_leans_high() -> None:
    prose = "The quick brown fox jumps over the lazy dog. " * 20
    # a real BPE tokenizer gives 10 tokens per sentence: 200; we must not go below
    assert estimate_text_tokens(prose) >= 200


def test_lone_surrogates_do_not_crash() -> None:
    assert estimate_text_tokens("\ud800") == 1


def test_estimate_of_a_megabyte_is_not_quadratic() -> None:
    """1.1 MB is estimated, and leans high. The bound is no speed claim (speed is for
    benchmarks): it only turns a hang into a failure. Work quadratic in the length would
    be ~10^12 steps here, hours; the linear rule takes milliseconds, so even a machine
    thousands of times slower than usual passes."""
    text = "lorem ipsum dolor sit amet, " * 40_000  # ~1.1 MB
    started = time.perf_counter()
    n = estimate_text_tokens(text)
    assert time.perf_counter() - started < 120.0, "the estimate hung (quadratic work?)"
    assert n >= len(text) // 3


def request(*messages: Message, **kwargs: object) -> GatewayRequest:
    return GatewayRequest(model="m", messages=messages, **kwargs)  # type: ignore[arg-type]


def test_request_rule() -> None:
    user = Message("user", (TextPart("hello"), ImagePart("data:image/png;base64," + "A" * 9999)))
    assert estimate_request_tokens(request(user)) == (
        REPLY_PRIMING + MESSAGE_OVERHEAD + 2 + IMAGE_TOKENS
    )
    call = Message("assistant", tool_calls=(ToolCall("call_1", "get", '{"a":1}'),))
    answer = Message("tool", (TextPart("42"),), tool_call_id="call_1")
    expected_call = (MESSAGE_OVERHEAD + TOOL_CALL_OVERHEAD + estimate_text_tokens("get")
                     + estimate_text_tokens('{"a":1}'))
    expected_answer = MESSAGE_OVERHEAD + 1 + estimate_text_tokens("call_1")
    assert estimate_request_tokens(request(call, answer)) == (
        REPLY_PRIMING + expected_call + expected_answer
    )


def test_tools_and_response_format_count_as_json() -> None:
    params = {"type": "object", "properties": {"city": {"type": "string"}}}
    base = request(Message("user", (TextPart("hi"),)))
    with_tool = request(Message("user", (TextPart("hi"),)),
                        tools=(Tool("weather", "Get the weather", params),))
    schema = ('{"description":"Get the weather","name":"weather","parameters":'
              '{"properties":{"city":{"type":"string"}},"type":"object"}}')
    assert estimate_request_tokens(with_tool) - estimate_request_tokens(base) == (
        TOOL_OVERHEAD + estimate_text_tokens(schema)
    )
    fmt = {"type": "json_object"}
    with_fmt = request(Message("user", (TextPart("hi"),)), response_format=fmt)
    assert estimate_request_tokens(with_fmt) - estimate_request_tokens(base) == (
        estimate_text_tokens('{"type":"json_object"}')
    )


roles = st.sampled_from(["system", "user", "assistant", "tool"])
parts = st.one_of(st.builds(TextPart, st.text()), st.builds(ImagePart, st.text()))
messages = st.builds(Message, roles, st.tuples(parts) | st.tuples(parts, parts))


@given(st.lists(messages, max_size=5), messages)
def test_request_estimate_grows_with_messages_and_covers_text(
    existing: list[Message], extra: Message
) -> None:
    before = estimate_request_tokens(request(*existing))
    after = estimate_request_tokens(request(*existing, extra))
    assert after >= before + MESSAGE_OVERHEAD + estimate_text_tokens(extra.text())
