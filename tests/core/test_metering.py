"""Metering: a guessed count never bills past the cap, the provider's count is the bill,
and a stream is cut exactly when it goes past its cap."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from core import metering
from core.model import StreamEvent, TextDelta, ToolCallDelta, Usage, UsageReport
from core.tokens import estimate_text_tokens

usages = st.builds(
    Usage,
    input_tokens=st.integers(0, 10_000),
    output_tokens=st.integers(0, 10_000),
    cached_input_tokens=st.integers(0, 1000),
)
events: st.SearchStrategy[StreamEvent] = st.one_of(
    st.builds(TextDelta, st.text(max_size=20)),
    st.builds(ToolCallDelta, index=st.integers(0, 2), arguments=st.text(max_size=10)),
    st.builds(UsageReport, usages),
)


def _run(meter: metering.Meter, seen: list[StreamEvent]) -> metering.Meter:
    for event in seen:
        meter = metering.observe(meter, event)
    return meter


@given(st.lists(events, max_size=40), st.none() | st.integers(1, 50), st.integers(0, 1000))
def test_a_guess_never_bills_past_the_cap(seen: list[StreamEvent], cap: int | None, estimate: int) -> None:
    meter = _run(metering.Meter(estimate, cap), seen)
    used = metering.consumed(meter)
    reports = [e.usage for e in seen if isinstance(e, UsageReport)]
    pieces = sum(1 for e in seen if isinstance(e, TextDelta | ToolCallDelta))
    if not reports and not pieces:
        assert used is None
        return
    assert used is not None
    if reports:
        assert used.output_tokens >= reports[-1].output_tokens  # the provider's count is billed
    if cap is not None and (not reports or reports[-1].output_tokens <= cap):
        assert used.output_tokens <= cap
    if not reports:
        text = "".join(e.text for e in seen if isinstance(e, TextDelta))
        assert used.input_tokens == estimate
        assert used.output_tokens == min(max(pieces, estimate_text_tokens(text)), cap or 10**9)


@given(st.lists(events, max_size=40), st.integers(1, 20))
def test_over_cap_exactly_when_pieces_or_the_providers_count_pass_the_cap(
    seen: list[StreamEvent], cap: int
) -> None:
    meter = _run(metering.Meter(5, cap), seen)
    reports = [e.usage for e in seen if isinstance(e, UsageReport)]
    pieces = sum(1 for e in seen if isinstance(e, TextDelta | ToolCallDelta))
    provider = reports[-1].output_tokens if reports else 0
    assert metering.over_cap(meter) == (max(pieces, provider) > cap)
    assert not metering.over_cap(metering.Meter(5, None))


@given(usages, st.integers(1, 5))
def test_a_whole_answer_bills_exactly_the_providers_report(usage: Usage, cap: int) -> None:
    meter = _run(metering.Meter(7, cap, whole=True), [UsageReport(usage), TextDelta("a b c d e f")])
    assert metering.consumed(meter) == usage
    assert not metering.over_cap(meter)


@given(st.integers(0, 1000), st.none() | st.integers(0, 1000), usages)
def test_the_tokens_correction_makes_the_charge_the_real_usage(
    estimate: int, asked: int | None, usage: Usage
) -> None:
    charged = metering.charged_tokens(estimate, asked)
    assert charged + metering.tokens_correction(charged, usage) == usage.total_tokens
