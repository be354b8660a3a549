"""Leases: how much of a shared limit one gateway process may take for itself at once.

Owns: the size of the slice a process takes from a shared rate bucket or budget row
(on Postgres, shared by many processes), so that most requests are admitted from the
process's own slice without a database round trip, while no request is admitted that
the shared limit would have refused.

Rules:
- A slice is a whole number of `unit`s, where `unit` is what the request at hand needs
  (1 request, its estimated tokens, its worst-case cost). `slice_units(available,
  unit, policy)` is that number:
    available < unit                       -> 0: nothing to lease, the request is refused
    available < policy.exact_below * unit  -> 1: a per-request reservation, exact
    otherwise                              -> available // (unit * policy.divisor),
                                              between 1 and policy.max_units
- So `slice_units(...) * unit <= available` always: a slice taken atomically from the
  shared row never takes more than the row has, and the slices all processes hold sum
  to no more than the limit. As the row runs out, slices shrink to one request's worth.
- Monotone: less available never gives a larger slice.
- Works on `int`, `float` (buckets) and `Decimal` (money): only `//`, `*` and `<` are
  used, and a slice is an integer multiple of `unit`, so Decimal slices are exact.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TypeVar

from attrs import field, frozen

N = TypeVar("N", int, float, Decimal)


def _positive(instance: object, attribute: object, value: int) -> None:
    del instance
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{getattr(attribute, 'name', 'value')} must be an int >= 1, not {value!r}")


@frozen
class LeasePolicy:
    divisor: int = field(default=8, validator=_positive)  # a slice is at most 1/divisor
    exact_below: int = field(default=32, validator=_positive)  # units: below, per request
    max_units: int = field(default=1024, validator=_positive)


def slice_units(available: N, unit: N, policy: LeasePolicy) -> int:
    """How many `unit`s to lease from a shared row that has `available` left."""
    if not unit > 0:
        raise ValueError(f"unit must be > 0, not {unit!r}")
    if available < unit:
        return 0
    if available < unit * policy.exact_below:
        return 1
    units = int(available // (unit * policy.divisor))
    return max(1, min(units, policy.max_units))
