"""Money budgets: reserve the worst case before a call, settle the real cost after.

Owns: whether a request may spend money from a budget, and the ledger of what is spent
and what is held. Money is `Decimal`, exact; no float ever touches it.

Rules:
- `BudgetState(limit, spent, reservations, closed, leases)`: `reserved` is what is held:
  the sum of open reservations and of the leases processes hold (`core.budget_lease`),
  `available = max(0, limit - spent - reserved)`.
- `reserve(state, rid, amount)` grants iff `0 <= amount <= available`, so spent plus
  reserved never exceeds the limit through reservations. Per reservation id (rid):

    rid is ...   reserve                  settle                     release
    open         Reserved(existing), same  charge actual, close rid   drop it, close rid
    closed       Refused("closed"), same   nothing ("closed")         nothing
    unknown      grant or Refused          nothing ("unknown")        nothing

  so every operation is idempotent per rid. `closed` remembers the last
  `CLOSED_MEMORY` (256) finished rids, oldest first; a rid older than that reads as
  unknown again (rids are unique per request, so this only bounds the state's size).
- `settle` charges the real cost even when it exceeds the reservation (money spent is a
  fact); the `Settlement` reports the `overrun` so the caller can log it. After an
  overrun spent may exceed the limit; `available` is then 0.
- `with_limit` changes the limit (configuration); open reservations stay.
- `max_output_tokens_that_fit(available, price, input_tokens)` is exact (integer
  arithmetic on the Decimals' exact ratios). Free output fits `UNBOUNDED_TOKENS`.
- Period budgets live under `period_key(scope, period, at)`: "key:abc:2026-11" (month),
  "key:abc:2026-11-05" (day), "key:abc:total"; `at` must be timezone-aware (read in UTC).
- `to_dict` / `from_dict` round-trip exactly (Decimals as strings; "leases" only when
  there are some); bad data is a `ValueError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Literal, TypeAlias

from attrs import evolve, field, frozen

from core.catalog import Price

CLOSED_MEMORY = 256
UNBOUNDED_TOKENS = 2**63 - 1  # what fits when output tokens are free
_MILLION = 10**6

Period = Literal["day", "month", "total"]
RidStatus = Literal["open", "closed", "unknown"]


def _money(name: str, value: Decimal) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValueError(f"{name} must be a finite Decimal, not {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {value}")
    return value


def _check_money(instance: object, attribute: object, value: Decimal) -> None:
    del instance
    _money(getattr(attribute, "name", "amount"), value)


def _check_reservations(
    instance: object, attribute: object, value: tuple[tuple[str, Decimal], ...]
) -> None:
    del instance, attribute
    rids = [rid for rid, _ in value]
    if len(set(rids)) != len(rids):
        raise ValueError("reservation ids must be unique")
    for rid, amount in value:
        _money(f"reservation {rid!r}", amount)


def _check_leases(
    instance: object, attribute: object, value: tuple[tuple[str, Decimal, float], ...]
) -> None:
    del instance, attribute
    ids = [lid for lid, _, _ in value]
    if len(set(ids)) != len(ids):
        raise ValueError("lease ids must be unique")
    for lid, amount, expires in value:
        _money(f"lease {lid!r}", amount)
        if not isinstance(expires, float | int) or expires != expires:
            raise ValueError(f"lease {lid!r}: expires must be a number, not {expires!r}")


@frozen
class BudgetState:
    limit: Decimal = field(validator=_check_money)
    spent: Decimal = field(default=Decimal(0), validator=_check_money)
    reservations: tuple[tuple[str, Decimal], ...] = field(
        default=(), validator=_check_reservations
    )
    closed: tuple[str, ...] = ()  # the last CLOSED_MEMORY settled or released rids (and leases)
    # (lease id, amount, expires in epoch seconds): what processes hold (core.budget_lease)
    leases: tuple[tuple[str, Decimal, float], ...] = field(default=(), validator=_check_leases)

    @property
    def leased(self) -> Decimal:
        return sum((amount for _, amount, _ in self.leases), Decimal(0))

    @property
    def reserved(self) -> Decimal:
        return sum((amount for _, amount in self.reservations), Decimal(0)) + self.leased

    @property
    def available(self) -> Decimal:
        return max(Decimal(0), self.limit - self.spent - self.reserved)

    def reservation(self, rid: str) -> Decimal | None:
        return next((amount for r, amount in self.reservations if r == rid), None)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "limit": str(self.limit),
            "spent": str(self.spent),
            "reservations": [[rid, str(amount)] for rid, amount in self.reservations],
            "closed": list(self.closed),
        }
        if self.leases:
            out["leases"] = [[lid, str(amount), expires] for lid, amount, expires in self.leases]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> BudgetState:
        """Parse a stored state; missing fields default, malformed ones are `ValueError`."""
        reservations = d.get("reservations", [])
        closed = d.get("closed", [])
        if not isinstance(reservations, list) or not isinstance(closed, list):
            raise ValueError("budget state: reservations and closed must be lists")
        pairs: list[tuple[str, Decimal]] = []
        for item in reservations:
            if not (isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], str)):
                raise ValueError(f"budget state: bad reservation {item!r}")
            pairs.append((item[0], _parse_decimal("reservation", item[1])))
        if not all(isinstance(rid, str) for rid in closed):
            raise ValueError("budget state: closed ids must be strings")
        return cls(
            limit=_parse_decimal("limit", d.get("limit")),
            spent=_parse_decimal("spent", d.get("spent", "0")),
            reservations=tuple(pairs),
            closed=tuple(closed)[-CLOSED_MEMORY:],
            leases=_parse_leases(d.get("leases", [])),
        )


def _parse_leases(leases: object) -> tuple[tuple[str, Decimal, float], ...]:
    if not isinstance(leases, list):
        raise ValueError("budget state: leases must be a list")
    out: list[tuple[str, Decimal, float]] = []
    for item in leases:
        if not (
            isinstance(item, list | tuple) and len(item) == 3 and isinstance(item[0], str)
            and isinstance(item[2], float | int) and not isinstance(item[2], bool)
        ):
            raise ValueError(f"budget state: bad lease {item!r}")
        out.append((item[0], _parse_decimal("lease", item[1]), float(item[2])))
    return tuple(out)


def _parse_decimal(name: str, value: object) -> Decimal:
    if not isinstance(value, str):
        raise ValueError(f"budget state: {name} must be a decimal string, not {value!r}")
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ValueError(f"budget state: {name} is not a decimal: {value!r}") from None


@frozen
class Reserved:
    rid: str
    amount: Decimal


@frozen
class Refused:
    rid: str
    reason: Literal["insufficient", "closed"]
    available: Decimal


@frozen
class Settlement:
    rid: str
    outcome: Literal["settled", "unknown", "closed"]  # unknown / closed: nothing changed
    reserved: Decimal = Decimal(0)  # the reservation that was settled
    charged: Decimal = Decimal(0)  # what was added to spent (the real cost)
    overrun: Decimal = Decimal(0)  # charged - reserved when positive: log it

    @property
    def changed(self) -> bool:
        return self.outcome == "settled"


Decision: TypeAlias = Reserved | Refused


def status(state: BudgetState, rid: str) -> RidStatus:
    if state.reservation(rid) is not None:
        return "open"
    return "closed" if rid in state.closed else "unknown"


def _close(state: BudgetState, rid: str, spent: Decimal) -> BudgetState:
    return evolve(
        state,
        spent=spent,
        reservations=tuple(p for p in state.reservations if p[0] != rid),
        closed=(*(c for c in state.closed if c != rid), rid)[-CLOSED_MEMORY:],
    )


# ---- reserve ----------------------------------------------------------------------------


def _reserve_open(state: BudgetState, rid: str, amount: Decimal) -> tuple[Decision, BudgetState]:
    existing = state.reservation(rid)
    assert existing is not None
    return Reserved(rid, existing), state


def _reserve_closed(state: BudgetState, rid: str, amount: Decimal) -> tuple[Decision, BudgetState]:
    return Refused(rid, "closed", state.available), state


def _reserve_new(state: BudgetState, rid: str, amount: Decimal) -> tuple[Decision, BudgetState]:
    if amount > state.available:
        return Refused(rid, "insufficient", state.available), state
    return Reserved(rid, amount), evolve(state, reservations=(*state.reservations, (rid, amount)))


_RESERVE: Mapping[
    RidStatus, Callable[[BudgetState, str, Decimal], tuple[Decision, BudgetState]]
] = {"open": _reserve_open, "closed": _reserve_closed, "unknown": _reserve_new}


def reserve(state: BudgetState, rid: str, amount: Decimal) -> tuple[Decision, BudgetState]:
    """Hold `amount` under `rid` if the budget has it available (idempotent per rid)."""
    _money("amount", amount)
    return _RESERVE[status(state, rid)](state, rid, amount)


# ---- settle and release -----------------------------------------------------------------


def _settle_open(
    state: BudgetState, rid: str, actual: Decimal
) -> tuple[Settlement, BudgetState]:
    held = state.reservation(rid)
    assert held is not None
    overrun = max(Decimal(0), actual - held)
    return Settlement(rid, "settled", held, actual, overrun), _close(state, rid, state.spent + actual)


def _settle_closed(
    state: BudgetState, rid: str, actual: Decimal
) -> tuple[Settlement, BudgetState]:
    return Settlement(rid, "closed"), state


def _settle_unknown(
    state: BudgetState, rid: str, actual: Decimal
) -> tuple[Settlement, BudgetState]:
    return Settlement(rid, "unknown"), state


_SETTLE: Mapping[
    RidStatus, Callable[[BudgetState, str, Decimal], tuple[Settlement, BudgetState]]
] = {"open": _settle_open, "closed": _settle_closed, "unknown": _settle_unknown}


def settle(state: BudgetState, rid: str, actual: Decimal) -> tuple[Settlement, BudgetState]:
    """Replace reservation `rid` by its real cost `actual` (idempotent per rid)."""
    _money("actual", actual)
    return _SETTLE[status(state, rid)](state, rid, actual)


def release(state: BudgetState, rid: str) -> BudgetState:
    """Drop reservation `rid` without charging (the call failed); idempotent."""
    if status(state, rid) != "open":
        return state
    return _close(state, rid, state.spent)


def with_limit(state: BudgetState, new_limit: Decimal) -> BudgetState:
    """The same budget under a new limit; open reservations and spending stay."""
    _money("limit", new_limit)
    return state if new_limit == state.limit else evolve(state, limit=new_limit)


# ---- sizing -----------------------------------------------------------------------------


def max_output_tokens_that_fit(available: Decimal, price: Price, input_tokens: int) -> int:
    """The largest n >= 0 with input*price.input/1e6 + n*price.output/1e6 <= available.

    0 when even the input does not fit (or `available` is negative);
    `UNBOUNDED_TOKENS` when output is free and the input fits.
    """
    if not isinstance(available, Decimal) or not available.is_finite():
        raise ValueError(f"available must be a finite Decimal, not {available!r}")
    if input_tokens < 0:
        raise ValueError(f"input_tokens must be >= 0, not {input_tokens}")
    _money("price.input", price.input)
    _money("price.output", price.output)
    # everything in exact integers: available = a_n/a_d, prices per 1M tokens i_n/i_d, o_n/o_d
    a_n, a_d = available.as_integer_ratio()
    i_n, i_d = price.input.as_integer_ratio()
    o_n, o_d = price.output.as_integer_ratio()
    # money left for output, times 1e6, as left_n / left_d
    left_n = a_n * _MILLION * i_d - input_tokens * i_n * a_d
    left_d = a_d * i_d
    if left_n < 0:
        return 0
    if o_n == 0:
        return UNBOUNDED_TOKENS
    # n <= (left_n / left_d) / (o_n / o_d)
    return min(UNBOUNDED_TOKENS, (left_n * o_d) // (left_d * o_n))


def period_key(scope: str, period: Period, at: datetime) -> str:
    """The storage scope of `scope`'s budget for the period containing `at` (UTC)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("period_key needs a timezone-aware datetime")
    utc = at.astimezone(UTC)
    suffix = {
        "day": f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}",
        "month": f"{utc.year:04d}-{utc.month:02d}",
        "total": "total",
    }.get(period)
    if suffix is None:
        raise ValueError(f"period must be day, month or total, not {period!r}")
    return f"{scope}:{suffix}"
