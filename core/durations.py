"""Durations as Replicate's `Cancel-After` header takes them: `30s`, `5m`, `1h30m`, `1.5h`.

Owns: reading (and writing) a duration. Pure.

Rules:
- A duration is one or more `<number><unit>` terms, the units `h`, `m`, `s`, `ms`,
  each at most once and in that order (`1h30m`, `2m30s`, `1500ms`); a number is
  decimal digits with an optional fraction (`1.5h`). A bare number is seconds (`90`).
  No sign, no spaces inside, no exponent; surrounding whitespace is ignored.
- The value must be more than 0 and at most `MAX_SECONDS` (30 days).
- A job's deadline (`deadline(now, cancel_after, field)`): the `Cancel-After` header is a
  duration from `now`; the body's `deadline` field is a duration too, or an RFC 3339
  time with a zone (`2026-12-02T03:00:00Z`) that must be after `now`. With both, the
  earlier wins. A bad one raises `DeadlineError` naming it (`Cancel-After` or `deadline`).
- `parse` returns seconds as a float (sums are exact in `Decimal` first); a bad value
  raises `ValueError` saying what is wrong. `format(seconds)` writes the canonical form
  (`1h30m`, `45s`, `1.5s`), which `parse` reads back to the same value.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal

MAX_SECONDS = 30 * 24 * 3600
_UNITS: tuple[tuple[str, Decimal], ...] = (
    ("h", Decimal(3600)), ("m", Decimal(60)), ("s", Decimal(1)), ("ms", Decimal("0.001")),
)  # fmt: skip
_TERM = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_BARE = re.compile(r"\d+(?:\.\d+)?")


def parse(text: str) -> float:
    """Seconds in `text` (see the module rules); `ValueError` when it is not a duration."""
    value = text.strip()
    if _BARE.fullmatch(value):
        total = Decimal(value)
    else:
        total, pos, last = Decimal(0), 0, -1
        order = [unit for unit, _ in _UNITS]
        for match in _TERM.finditer(value):
            if match.start() != pos:
                break
            rank = order.index(match.group(2))
            if rank <= last:
                raise ValueError(f"duration {text!r}: units must each appear once, in the order h, m, s, ms")
            total += Decimal(match.group(1)) * _UNITS[rank][1]
            pos, last = match.end(), rank
        if pos != len(value) or not value:
            raise ValueError(f"duration {text!r} is not like 30s, 5m or 1h30m")
    if total <= 0:
        raise ValueError(f"duration {text!r} must be more than 0")
    if total > MAX_SECONDS:
        raise ValueError(f"duration {text!r} is longer than 30 days")
    return float(total)


def format(seconds: float) -> str:
    """The canonical text of a positive duration (`1h30m`, `45s`, `0.25s`)."""
    if not seconds > 0:
        raise ValueError("a duration is more than 0 seconds")
    left = Decimal(repr(float(seconds)))
    out = []
    for unit, size in _UNITS[:2]:
        whole = int(left // size)
        if whole:
            out.append(f"{whole}{unit}")
            left -= whole * size
    if left:
        out.append(f"{left.normalize():f}s")
    return "".join(out)


class DeadlineError(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


def _from_field(now: float, value: object) -> float:
    if not isinstance(value, str):
        raise DeadlineError("deadline", "'deadline' must be a duration (30s, 5m, 1h30m) or an RFC 3339 time")
    try:
        return now + parse(value)
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        raise DeadlineError(
            "deadline", "'deadline' must be a duration (30s, 5m, 1h30m) or an RFC 3339 time"
        ) from None
    if at.tzinfo is None:
        raise DeadlineError("deadline", "'deadline' needs a time zone (e.g. 2026-12-02T03:00:00Z)")
    if at.timestamp() <= now:
        raise DeadlineError("deadline", "'deadline' is not in the future")
    if at.timestamp() - now > MAX_SECONDS:
        raise DeadlineError("deadline", "'deadline' is more than 30 days away")
    return at.timestamp()


def deadline(now: float, cancel_after: str | None, field: object) -> float | None:
    """The job's deadline (epoch seconds) from the header and the field; None: none."""
    found: list[float] = []
    if cancel_after is not None:
        try:
            found.append(now + parse(cancel_after))
        except ValueError as err:
            raise DeadlineError("Cancel-After", f"Cancel-After: {err}") from None
    if field is not None:
        found.append(_from_field(now, field))
    return min(found) if found else None
