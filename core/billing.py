"""Billing: what one call costs, exactly, in USD.

Owns: turning token counts and a `Price` (USD per 1M tokens) into money, and the
worst-case cost used to reserve budget before a call.

Rules:
- Money is `Decimal`, never float. Arithmetic runs in a private `localcontext` with ample
  precision and the `Inexact` trap set, so the sum is exact (or the call raises; it never
  silently rounds mid-way).
- One rounding rule, applied once per usage record: the exact sum is quantized to
  `Decimal("0.0000000001")` (1e-10 USD) with ROUND_HALF_EVEN. Totals over many records
  add the already-rounded records (addition of 1e-10-quantized values is exact).
- Token classes: `input_tokens` bill at `price.input`; `cached_input_tokens` at
  `price.cached_input` (or `price.input` when the deployment has no cache price);
  `cache_write_tokens` at `price.cache_write` (or `price.input`); `output_tokens`
  (reasoning included) at `price.output`.
- `worst_case_cost(input_tokens, max_output_tokens, price)` bills every input token at the
  full input price and the whole output allowance; it rounds with the same rule, so (the
  rule being monotone) it is never below `cost` of a usage with no more input and output
  tokens billed at prices no higher than `price.input` / `price.output`. Cache writes
  priced above `price.input` (Anthropic) can make the real cost exceed it; budgets
  settle the real amount afterwards.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal, Inexact, localcontext

from core.catalog import Price
from core.model import Usage

QUANTUM = Decimal("0.0000000001")  # 1e-10 USD
PER_TOKENS = 1_000_000
_PRECISION = 200  # digits; far more than any real price x token count needs


def _exact_context() -> Context:
    ctx = Context(prec=_PRECISION, rounding=ROUND_HALF_EVEN)
    ctx.traps[Inexact] = True
    return ctx


def _round(exact: Decimal) -> Decimal:
    with localcontext(Context(prec=_PRECISION, rounding=ROUND_HALF_EVEN)):
        return exact.quantize(QUANTUM, rounding=ROUND_HALF_EVEN)


def _exact_sum(pairs: tuple[tuple[int, Decimal], ...]) -> Decimal:
    with localcontext(_exact_context()):
        total = Decimal(0)
        for tokens, per_million in pairs:
            total += Decimal(tokens) * per_million
        return total / PER_TOKENS  # dividing by a power of ten is exact


def cost(usage: Usage, price: Price) -> Decimal:
    """The exact cost of `usage` at `price`, rounded once to 1e-10 USD (half-even)."""
    cached = price.input if price.cached_input is None else price.cached_input
    write = price.input if price.cache_write is None else price.cache_write
    return _round(
        _exact_sum(
            (
                (usage.input_tokens, price.input),
                (usage.cached_input_tokens, cached),
                (usage.cache_write_tokens, write),
                (usage.output_tokens, price.output),
            )
        )
    )


def worst_case_cost(input_tokens: int, max_output_tokens: int, price: Price) -> Decimal:
    """All input at the full input price plus the whole output allowance (for reserving)."""
    return _round(_exact_sum(((input_tokens, price.input), (max_output_tokens, price.output))))


def format_usd(amount: Decimal) -> str:
    """A plain decimal string for JSON: no exponent, no trailing zeros ("0.00003", "12")."""
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
