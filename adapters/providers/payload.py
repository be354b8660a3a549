"""Reading provider JSON defensively: the pieces every codec needs the same way.

Owns: what counts as a well-formed stream event (a JSON object, decoded by msgspec:
strict JSON, so NaN and Infinity are refused as well as anything that does not parse;
anything else is a cut stream, `FailureKind.STREAM_CUT`, so the attempt machine treats
it like a dropped connection), how a count is read from untrusted JSON (a missing field,
a non-object, a non-integer, including `true`, and an integer below 0 or above
`MAX_COUNT`, 2**53 - 1, the largest JSON integer every reader keeps exactly, read as
None: a negative count would bill a negative cost, and one beyond 2**63 cannot be stored
in the ledger), and how a usage object becomes a core `Usage`, given where its wire
format puts each count (`UsageShape`).

Usage rules (`decode_usage`):
- Each count is read at its path; a count that is absent (or not an integer) keeps its
  value in `base` (the usage known so far; zero by default), so a partial update, such
  as Anthropic's `message_delta`, changes only what it names.
- When the format's input count includes cache reads and writes (OpenAI's do), those
  are taken out: the core's `input_tokens` excludes both (never below 0).
"""

from __future__ import annotations

from typing import Any

import msgspec
from attrs import frozen

from adapters.providers.base import ProviderError
from core.model import FailureKind, Usage

Path = tuple[str, ...]  # keys from the usage object down to one count


_DECODE = msgspec.json.Decoder().decode  # `msgspec.json.decode`, without its per-call set-up


def event_object(provider: str, data: str) -> dict[str, Any]:
    """The JSON object in one SSE event's data, or ProviderError(STREAM_CUT)."""
    try:
        payload = _DECODE(data)
    except msgspec.DecodeError:
        raise ProviderError(FailureKind.STREAM_CUT, f"{provider} sent a malformed stream event") from None
    if not isinstance(payload, dict):
        raise ProviderError(FailureKind.STREAM_CUT, f"{provider} sent a non-object event")
    return payload


MAX_COUNT = 2**53 - 1


def int_field(obj: object, key: str) -> int | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        return value
    return None


def _at(obj: object, path: Path) -> int | None:
    for key in path[:-1]:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return int_field(obj, path[-1])


@frozen
class UsageShape:
    """Where one wire format puts each count of a usage object (None: never sent)."""

    input: Path
    output: Path
    cached: Path
    cache_write: Path
    reasoning: Path | None = None
    input_includes_cache: bool = False


NO_USAGE = Usage()


def decode_usage(usage: object, shape: UsageShape, base: Usage = NO_USAGE) -> Usage:
    """A wire usage object -> Usage (see the module's usage rules)."""

    def count(path: Path | None, old: int) -> int:
        value = None if path is None else _at(usage, path)
        return old if value is None else value

    cached = count(shape.cached, base.cached_input_tokens)
    written = count(shape.cache_write, base.cache_write_tokens)
    raw_input = _at(usage, shape.input)
    if raw_input is None:
        input_tokens = base.input_tokens
    elif shape.input_includes_cache:
        input_tokens = max(0, raw_input - cached - written)
    else:
        input_tokens = raw_input
    return Usage(
        input_tokens=input_tokens,
        output_tokens=count(shape.output, base.output_tokens),
        cached_input_tokens=cached,
        cache_write_tokens=written,
        reasoning_tokens=count(shape.reasoning, base.reasoning_tokens),
    )
