"""Metering one provider call: what it consumed so far, and when its output must be cut.

Owns: the count the ledger bills for an attempt, and the output cap rule of streams. The
driver feeds every event of a provider call into `observe` and asks `over_cap` before
relaying a piece, and `consumed` when the attempt settles (finished, failed or cut).

Rules:
- A `UsageReport` replaces the provider's count (reports are cumulative); text and tool
  call pieces count as pieces, and text is kept for the estimate.
- `over_cap(meter)`: a streamed call with a cap (`cap`, the grant's output cap that
  upstream was sent as its max tokens) is over it once the pieces relayed, or the
  provider's own running output count when larger, exceed the cap. The driver then ends
  the answer with finish reason `length` and settles what was consumed. A whole call
  (`whole`, a non-streamed `complete`) is never over the cap: its answer is one piece.
- `consumed(meter)`: None when nothing was reported and nothing streamed (nothing to
  bill). A whole call bills exactly the provider's report. A streamed call bills the
  provider's counts, with output at least the guess: the pieces, or when the provider
  reported nothing the text estimate (`tokens.estimate_text_tokens`) when larger; a
  guess never bills past the cap (only the provider's own count may: it is the real
  bill). When the provider reported no input the request's input estimate is billed.
- `charged_tokens` is what admission charged the tokens-per-minute bucket (input estimate
  plus the asked maximum); `tokens_correction` the difference the real usage makes.
"""

from __future__ import annotations

from typing import NamedTuple

from core.model import StreamEvent, TextDelta, ToolCallDelta, Usage, UsageReport
from core.tokens import estimate_text_tokens


class _Text(NamedTuple):
    """The streamed text as a persistent list (append is O(1); joined once, at the end)."""

    before: _Text | None
    piece: str


def _joined(text: _Text | None) -> str:
    parts: list[str] = []
    while text is not None:
        parts.append(text.piece)
        text = text.before
    return "".join(reversed(parts))


class Meter(NamedTuple):
    """Immutable, made anew per streamed piece: a named tuple, whose constructor costs a
    third of a frozen attrs class's (3.4 -> 0.9 us per `observe` of a text piece)."""

    input_estimate: int
    cap: int | None = None
    whole: bool = False
    reported: Usage | None = None
    pieces: int = 0
    text: _Text | None = None


# `_NEW(Meter, (fields...))`: a named tuple made as its own `__new__` makes it, without that
# Python frame (`observe` makes two per streamed text piece)
_NEW = tuple.__new__


def observe(meter: Meter, event: StreamEvent) -> Meter:
    # called once per streamed piece: the constructor directly, not `_replace` (dearer)
    m = meter
    if isinstance(event, TextDelta):
        text = _NEW(_Text, (m.text, event.text))
        return _NEW(Meter, (m.input_estimate, m.cap, m.whole, m.reported, m.pieces + 1, text))
    if isinstance(event, UsageReport):
        return Meter(m.input_estimate, m.cap, m.whole, event.usage, m.pieces, m.text)
    if isinstance(event, ToolCallDelta):
        return Meter(m.input_estimate, m.cap, m.whole, m.reported, m.pieces + 1, m.text)
    return meter


def over_cap(meter: Meter) -> bool:
    if meter.whole or meter.cap is None:
        return False
    provider = meter.reported.output_tokens if meter.reported is not None else 0
    return max(meter.pieces, provider) > meter.cap


def consumed(meter: Meter) -> Usage | None:
    reported = meter.reported
    if meter.whole:
        return reported
    if reported is None and meter.pieces == 0:
        return None
    base = reported or Usage()
    guess = meter.pieces
    if reported is None:
        guess = max(guess, estimate_text_tokens(_joined(meter.text)))
    if meter.cap is not None:
        guess = min(guess, meter.cap)
    output = max(base.output_tokens, guess)
    if base.input_tokens == 0 and base.cached_input_tokens == 0:
        base = Usage(input_tokens=meter.input_estimate)
    return Usage(
        input_tokens=base.input_tokens,
        output_tokens=output,
        cached_input_tokens=base.cached_input_tokens,
        cache_write_tokens=base.cache_write_tokens,
        reasoning_tokens=base.reasoning_tokens,
    )


def charged_tokens(input_estimate: int, asked_output: int | None) -> int:
    return input_estimate + (asked_output or 0)


def tokens_correction(charged: int, usage: Usage) -> int:
    """What to add to the tokens bucket once the real usage is known (negative: refund)."""
    return usage.total_tokens - charged
