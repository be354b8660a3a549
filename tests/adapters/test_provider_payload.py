"""payload.decode_usage: one reader for every codec's usage object (OpenAI Chat,
Responses, Anthropic), with partial updates keeping what they don't name."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from adapters.providers import anthropic_codec, openai_codec, openai_responses_codec
from adapters.providers.payload import MAX_COUNT, UsageShape, decode_usage
from core.model import Usage

counts = st.integers(min_value=0, max_value=10**6)


def test_openai_counts_take_cache_out_of_the_input() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 7,
             "prompt_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 5},
             "completion_tokens_details": {"reasoning_tokens": 4}}
    assert openai_codec.decode_usage(usage) == Usage(
        input_tokens=65, output_tokens=7, cached_input_tokens=30, cache_write_tokens=5,
        reasoning_tokens=4)


def test_responses_counts_use_their_own_names() -> None:
    usage = {"input_tokens": 50, "output_tokens": 9,
             "input_tokens_details": {"cached_tokens": 10},
             "output_tokens_details": {"reasoning_tokens": 2}}
    assert openai_responses_codec.decode_usage(usage) == Usage(
        input_tokens=40, output_tokens=9, cached_input_tokens=10, reasoning_tokens=2)


def test_anthropic_partial_update_keeps_the_rest() -> None:
    start = anthropic_codec.decode_usage(
        {"input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 3,
         "cache_creation_input_tokens": 2})
    assert start == Usage(input_tokens=12, output_tokens=1, cached_input_tokens=3,
                          cache_write_tokens=2)
    assert anthropic_codec.decode_usage({"output_tokens": 40}, start) == Usage(
        input_tokens=12, output_tokens=40, cached_input_tokens=3, cache_write_tokens=2)


@given(st.one_of(st.none(), st.text(), st.booleans(), st.floats(), st.lists(counts),
                 st.dictionaries(st.text(max_size=3), st.one_of(st.text(), st.booleans()))))
def test_anything_that_is_not_a_count_reads_as_absent(junk: Any) -> None:
    for decode in (openai_codec.decode_usage, openai_responses_codec.decode_usage,
                   anthropic_codec.decode_usage):
        assert decode(junk) == Usage()
        assert decode({"prompt_tokens": junk, "input_tokens": junk, "output_tokens": True}) == Usage()


@given(st.one_of(st.integers(max_value=-1), st.integers(min_value=MAX_COUNT + 1)))
def test_a_negative_or_unstorable_count_reads_as_absent(bogus: int) -> None:
    """A negative count would bill a negative cost (a refund into the budgets), one past
    2**63 cannot be stored in the ledger (SQLite's writer cannot even bind it)."""
    wire = {"prompt_tokens": bogus, "input_tokens": bogus, "completion_tokens": bogus,
            "output_tokens": bogus, "cache_read_input_tokens": bogus,
            "cache_creation_input_tokens": bogus, "prompt_tokens_details": {"cached_tokens": bogus}}
    assert openai_codec.decode_usage(wire) == Usage()
    assert openai_responses_codec.decode_usage(wire) == Usage()
    base = Usage(input_tokens=5, output_tokens=6, cached_input_tokens=1, cache_write_tokens=2)
    assert anthropic_codec.decode_usage(wire, base) == base
    assert decode_usage({"in": MAX_COUNT, "out": MAX_COUNT}, SHAPE) == Usage(
        input_tokens=MAX_COUNT, output_tokens=MAX_COUNT)


SHAPE = UsageShape(input=("in",), output=("out",), cached=("d", "c"), cache_write=("d", "w"),
                   input_includes_cache=True)


@given(counts, counts, counts, counts)
def test_input_never_counts_cache_and_never_goes_below_zero(
    raw: int, cached: int, written: int, out: int
) -> None:
    usage = decode_usage({"in": raw, "out": out, "d": {"c": cached, "w": written}}, SHAPE)
    assert usage.input_tokens == max(0, raw - cached - written)
    assert (usage.cached_input_tokens, usage.cache_write_tokens) == (cached, written)
    assert usage.output_tokens == out


@given(counts, counts, counts)
def test_absent_counts_keep_the_base(input_tokens: int, out: int, cached: int) -> None:
    base = Usage(input_tokens=input_tokens, output_tokens=out, cached_input_tokens=cached)
    assert decode_usage({}, SHAPE, base) == base
    assert decode_usage({"out": out + 1}, SHAPE, base) == Usage(
        input_tokens=input_tokens, output_tokens=out + 1, cached_input_tokens=cached)
