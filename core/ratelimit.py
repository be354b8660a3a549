"""Token buckets for requests-per-minute and tokens-per-minute limits.

Owns: whether one key may spend `amount` (requests or tokens) now, what that leaves, and
the `x-ratelimit-*` / `Retry-After` header values that say so.

Rules:
- A `BucketSpec(capacity, per_second)` holds at most `capacity` and refills `per_second`
  (both finite, > 0; `BucketSpec.per_minute(n)` is capacity n, refill n/60 per second).
  A limit of zero ("blocked") is not a bucket: the caller refuses before asking.
- A `Bucket(level, updated_at)` is a stored state; `level` may be negative (debt left by
  `adjust` when real usage exceeded the estimate). No bucket yet (`None`) means full.
- Refill: `elapsed = max(0, now - updated_at)`, `level = min(capacity, level +
  elapsed * per_second)`, `updated_at = max(updated_at, now)`. A clock that goes
  backwards never refills and never moves `updated_at` backwards. A stored level above
  a (since lowered) capacity is clipped to it.
- `take` grants iff `level >= amount` (after refill) and then subtracts `amount`.
  `Denied` leaves the level as refilled (nothing is subtracted; the stored state is the
  same bucket brought up to date).
- An amount greater than `capacity` can never be granted, however long one waits:
  `never_fits(spec, amount)` says so, and `take` answers `Denied(retry_after=math.inf)`
  for it (the only case where `retry_after` is infinite). Callers check `never_fits`
  first and answer "request larger than the limit" instead of a Retry-After;
  `retry_after_header` refuses infinity.
- `reset_after` is the seconds until the bucket is full again; `retry_after` the seconds
  until `amount` would be granted, always > 0 on a `Denied`.
- Header values (OpenAI style): limit is the capacity, remaining is `floor(level)` and
  never negative, reset is a duration string like "1s", "6m0s", "12ms" (rounded up to
  the millisecond). `Retry-After` is whole seconds, rounded up, at least 1.
- States round-trip through `to_dict()` / `from_dict()` (JSON-able), because storage
  keeps them as JSON text and applies `take` / `adjust` inside a transaction.
- One key's buckets (requests and tokens) live together in one state (`Buckets`), so a
  request is admitted by one atomic update: `take_all(needs, buckets, now)` takes every
  need or none. A need larger than its bucket's capacity refuses first (`TooLarge`,
  before any bucket is looked at); else the first bucket that cannot give its amount
  refuses (`Refusal`: its kind, per-minute limit and retry-after) and no bucket is
  charged; else every bucket is charged. `headers` carries every bucket's headers as
  they stand after the decision (refilled, charged only when admitted).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal, TypeAlias

from attrs import field, frozen

# Float arithmetic leaves noise such as 0.012 * 1000 = 12.000000000000002; rounding
# up ignores anything below this many seconds (one nanosecond) so 12ms stays "12ms".
_NOISE = 1e-9

Kind = Literal["requests", "tokens"]


def _check_amount(amount: float) -> None:
    """A take's amount: a finite number, not negative."""
    _finite("amount", amount)
    if amount < 0:
        raise ValueError(f"amount must be >= 0, not {amount!r}")


def _finite(name: str, value: float) -> None:
    kind = type(value)
    if (kind is float and value - value == 0.0) or kind is int:
        return  # the usual case, checked first (inf - inf and nan - nan are nan; bool is not int)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")


def _check_spec(instance: BucketSpec, attribute: object, value: float) -> None:
    del instance
    name = getattr(attribute, "name", "value")
    _finite(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, not {value!r}")


@frozen
class BucketSpec:
    capacity: float = field(validator=_check_spec)
    per_second: float = field(validator=_check_spec)

    @classmethod
    def per_minute(cls, n: float) -> BucketSpec:
        """`n` per minute: holds up to `n`, refills `n / 60` per second."""
        return cls(capacity=float(n), per_second=n / 60.0)


def _check_bucket(instance: Bucket, attribute: object, value: float) -> None:
    del instance
    if type(value) is float and value - value == 0.0:
        return  # a finite float, the usual case (as `_finite`, without naming the field)
    _finite(getattr(attribute, "name", "value"), value)


@frozen
class Bucket:
    level: float = field(validator=_check_bucket)  # tokens available; negative is debt
    updated_at: float = field(validator=_check_bucket)

    def to_dict(self) -> dict[str, float]:
        return {"level": self.level, "updated_at": self.updated_at}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Bucket:
        """Parse a stored state; a missing or non-numeric field is a `ValueError`."""
        level, updated_at = d.get("level"), d.get("updated_at")
        if type(level) is float and type(updated_at) is float:
            return cls(level=level, updated_at=updated_at)  # as stored: checked by the fields
        values: list[float] = []
        for name in ("level", "updated_at"):
            value = d.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"bucket state field {name!r} must be a number, not {value!r}")
            values.append(float(value))
        return cls(level=values[0], updated_at=values[1])


@frozen
class Allowed:
    remaining: float  # level after the grant
    reset_after: float  # seconds until the bucket is full again


@frozen
class Denied:
    retry_after: float  # seconds until the amount would be granted; inf: never
    remaining: float  # level now (unchanged by the refusal)
    reset_after: float  # seconds until the bucket is full again


Decision: TypeAlias = Allowed | Denied


def never_fits(spec: BucketSpec, amount: float) -> bool:
    """True when `amount` exceeds what the bucket can ever hold, so no wait helps."""
    return amount > spec.capacity


def _level_at(spec: BucketSpec, bucket: Bucket | None, now: float) -> tuple[float, float]:
    """The refill rule's arithmetic: the bucket's level and `updated_at` at `now`."""
    if bucket is None:
        return spec.capacity, now
    elapsed = max(0.0, now - bucket.updated_at)
    return min(spec.capacity, bucket.level + elapsed * spec.per_second), max(bucket.updated_at, now)


def refill(spec: BucketSpec, bucket: Bucket | None, now: float) -> Bucket:
    """The bucket brought up to `now` (full when there is no bucket yet)."""
    _finite("now", now)
    level, updated_at = _level_at(spec, bucket, now)
    return Bucket(level=level, updated_at=updated_at)


def _seconds_until(spec: BucketSpec, level: float, target: float) -> float:
    return max(0.0, (target - level) / spec.per_second)


def take(
    spec: BucketSpec, bucket: Bucket | None, amount: float, now: float
) -> tuple[Decision, Bucket]:
    """Spend `amount` from the bucket if it holds that much now; else say how long to wait."""
    _check_amount(amount)
    _finite("now", now)
    level, updated_at = _level_at(spec, bucket, now)
    if level >= amount:
        left = level - amount
        return Allowed(left, _seconds_until(spec, left, spec.capacity)), Bucket(left, updated_at)
    wait = _seconds_until(spec, level, amount)
    # a denial always waits: a float wait that underflowed to 0 becomes the smallest one
    retry = math.inf if never_fits(spec, amount) else max(wait, math.ulp(0.0))
    reset = _seconds_until(spec, level, spec.capacity)
    return Denied(retry_after=retry, remaining=level, reset_after=reset), Bucket(level, updated_at)


def adjust(spec: BucketSpec, bucket: Bucket | None, delta: float, now: float) -> Bucket:
    """Charge `delta` more (or refund when negative) once the real count is known.

    The result is capped at `capacity` and may go below zero (debt), which later
    requests wait out. No bucket yet means a full one.
    """
    _finite("delta", delta)
    _finite("now", now)
    level, updated_at = _level_at(spec, bucket, now)
    return Bucket(level=min(spec.capacity, level - delta), updated_at=updated_at)


# ---- header values ----------------------------------------------------------------------


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def format_duration(seconds: float) -> str:
    """OpenAI-style duration: "0s", "12ms", "1s", "1.5s", "6m0s", "1h2m3.25s".

    Rounded up to the whole millisecond; below one second it is in milliseconds.
    """
    _finite("seconds", seconds)
    millis = max(0, math.ceil(seconds * 1000 - _NOISE * 1000))
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    secs = f"{whole}.{frac:03d}".rstrip("0") if frac else str(whole)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def headers(kind: Kind, spec: BucketSpec, decision: Decision) -> dict[str, str]:
    """`x-ratelimit-limit-<kind>`, `-remaining-<kind>` and `-reset-<kind>` for a decision."""
    return _headers(kind, spec, decision.remaining, decision.reset_after)


def _headers(kind: Kind, spec: BucketSpec, remaining: float, reset_after: float) -> dict[str, str]:
    if kind not in ("requests", "tokens"):
        raise ValueError(f"kind must be 'requests' or 'tokens', not {kind!r}")
    return {
        f"x-ratelimit-limit-{kind}": _number(spec.capacity),
        f"x-ratelimit-remaining-{kind}": str(max(0, math.floor(remaining + _NOISE))),
        f"x-ratelimit-reset-{kind}": format_duration(reset_after),
    }


def retry_after_header(seconds: float) -> str:
    """`Retry-After` value: whole seconds, rounded up, at least 1.

    Infinity (an amount that never fits) has no Retry-After: `ValueError`.
    """
    if math.isinf(seconds):
        raise ValueError("the request can never fit this limit; there is no Retry-After")
    _finite("seconds", seconds)
    return str(max(1, math.ceil(seconds - _NOISE)))


# ---- all-or-nothing admission over one key's buckets -------------------------------------


@frozen
class Need:
    kind: Kind
    per_minute: int
    amount: float


@frozen
class Admitted:
    headers: Mapping[str, str]


@frozen
class TooLarge:
    kind: Kind
    per_minute: int
    amount: float


@frozen
class Refusal:
    kind: Kind
    per_minute: int
    retry_after: float  # finite, > 0
    headers: Mapping[str, str]


Admission: TypeAlias = Admitted | TooLarge | Refusal
Buckets: TypeAlias = Mapping[str, Bucket]  # kind -> bucket (a kind not there: full)


def buckets_from_dict(d: Mapping[str, object] | None) -> dict[str, Bucket]:
    """Parse a stored `{kind: bucket dict}` state (None: no bucket yet)."""
    out: dict[str, Bucket] = {}
    for kind, value in (d or {}).items():
        if type(value) is not dict and not isinstance(value, Mapping):  # a dict, as stored: no ABC check
            raise ValueError(f"bucket state for {kind!r} must be an object, not {value!r}")
        out[kind] = Bucket.from_dict(value)
    return out


def buckets_to_dict(buckets: Buckets) -> dict[str, dict[str, float]]:
    return {kind: bucket.to_dict() for kind, bucket in buckets.items()}


def _rate(per_minute: int) -> tuple[float, float]:
    """`BucketSpec.per_minute(per_minute)`'s capacity and refill, without the object (it
    is made, and refuses as it does, only for a limit that is not finite and > 0)."""
    capacity = float(per_minute)
    if capacity > 0.0 and capacity - capacity == 0.0:
        return capacity, per_minute / 60.0
    spec = BucketSpec.per_minute(per_minute)  # raises the ValueError it raises
    return spec.capacity, spec.per_second


_HEADER_NAMES: Mapping[str, tuple[str, str, str]] = {
    kind: (f"x-ratelimit-limit-{kind}", f"x-ratelimit-remaining-{kind}", f"x-ratelimit-reset-{kind}")
    for kind in ("requests", "tokens")
}


def take_all(
    needs: tuple[Need, ...], buckets: Buckets, now: float
) -> tuple[Admission, dict[str, Bucket]]:
    """Take every need from its bucket, or none of them (see the module rules).

    Each bucket is brought up to `now` once and one `Bucket` is made per need: the
    result is what `take` on each need, then `refill` on each when one refused, gives
    (`tests/core/test_ratelimit_all.py` checks it against that composition). The refill
    and header arithmetic of `_level_at`, `_seconds_until` and `_headers` is written out
    here, on each need's capacity and refill rate (no `BucketSpec` per need)."""
    rates = [_rate(need.per_minute) for need in needs]
    for need, (capacity, _) in zip(needs, rates, strict=True):
        if need.amount > capacity:  # never_fits
            return TooLarge(need.kind, need.per_minute, need.amount), dict(buckets)
    levels: list[tuple[float, float]] = []
    refused: tuple[Need, float] | None = None  # the first need refused, and its retry-after
    _finite("now", now)
    for need, (capacity, per_second) in zip(needs, rates, strict=True):
        _check_amount(need.amount)
        bucket = buckets.get(need.kind)
        if bucket is None:
            level, updated_at = capacity, now
        else:
            elapsed = max(0.0, now - bucket.updated_at)
            level = min(capacity, bucket.level + elapsed * per_second)
            updated_at = max(bucket.updated_at, now)
        levels.append((level, updated_at))
        if refused is None and level < need.amount:
            # finite (`never_fits` refused above); a wait that underflowed to 0 is the smallest one
            refused = (need, max(max(0.0, (need.amount - level) / per_second), math.ulp(0.0)))
    new = dict(buckets)
    said: dict[str, str] = {}
    for need, (capacity, per_second), (level, updated_at) in zip(needs, rates, levels, strict=True):
        if refused is None:
            level -= need.amount
        new[need.kind] = Bucket(level, updated_at)
        names = _HEADER_NAMES.get(need.kind)
        if names is None:
            raise ValueError(f"kind must be 'requests' or 'tokens', not {need.kind!r}")
        limit, remaining, reset = names
        said[limit] = _number(capacity)
        said[remaining] = str(max(0, math.floor(level + _NOISE)))
        said[reset] = format_duration(max(0.0, (capacity - level) / per_second))
    if refused is not None:
        need, retry_after = refused
        return Refusal(need.kind, need.per_minute, retry_after, said), new
    return Admitted(said), new
