"""Usage reports: ledger rows added up by period, model, provider, project and status.

Owns: what one ledger row says (`LedgerRow`) and how rows are summed (`aggregate`).
Storage reads the rows; the server turns the summary into JSON.

Rules:
- `at` is a timezone-aware datetime, normalized to UTC; a naive one is a `ValueError`.
- `Totals`: requests (rows), errors (rows whose status is not "ok"), token sums, and cost
  (the sum of the rows' already-rounded Decimal costs: exact, no further rounding).
- `aggregate(rows, group_by)`: `group_by` is a tuple of dimensions among hour, day,
  month, model, provider, project, status, without repeats; anything else is
  `InvalidRequest(param="group_by")`. Each group's key is a tuple of (dimension, value)
  pairs in `group_by` order; groups are sorted by key. Periods are UTC ISO strings:
  hour "2026-11-26T13:00:00Z", day "2026-11-26", month "2026-11". With an empty
  `group_by` every row falls in one group keyed `()` (none when there are no rows), so
  the groups always add up to the totals.
- `combine(parts)`: the same summary from partial sums, each a (group key, Totals) of
  some of the rows (storage sums the rollup's whole hours and the ledger's edges in SQL,
  `adapters/storage/ledger.py`); parts of one key add up exactly, so combining the
  parts of any split of the rows equals `aggregate` of the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Context, Decimal

from attrs import field, frozen

from core.errors import InvalidRequest
from core.model import Usage


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("LedgerRow.at must be timezone-aware")
    return at.astimezone(UTC)


@frozen
class LedgerRow:
    at: datetime = field(converter=_utc)
    tenant: str
    project: str
    key_id: str
    model: str
    provider: str
    deployment: str
    usage: Usage
    cost: Decimal
    status: str  # "ok" or an error code
    latency_ms: int | None = None
    ttft_ms: int | None = None


@frozen
class Totals:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    total_tokens: int = 0
    cost: Decimal = Decimal(0)

    @classmethod
    def of(cls, row: LedgerRow) -> Totals:
        u = row.usage
        return cls(
            requests=1,
            errors=0 if row.status == "ok" else 1,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cached_input_tokens=u.cached_input_tokens,
            cache_write_tokens=u.cache_write_tokens,
            total_tokens=u.total_tokens,
            cost=row.cost,
        )

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            requests=self.requests + other.requests,
            errors=self.errors + other.errors,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cost=_add_exact(self.cost, other.cost),
        )


def _add_exact(a: Decimal, b: Decimal) -> Decimal:
    """a + b without the ambient context's rounding: the precision covers both operands."""
    if not (a.is_finite() and b.is_finite()):
        raise ValueError("ledger costs must be finite decimals")
    low = min(int(a.as_tuple().exponent), int(b.as_tuple().exponent))
    digits = max(a.adjusted(), b.adjusted()) - low + 2
    return Context(prec=max(digits, 28)).add(a, b)


GroupKey = tuple[tuple[str, str], ...]


@frozen
class Group:
    key: GroupKey
    totals: Totals


@frozen
class UsageSummary:
    totals: Totals
    groups: tuple[Group, ...]


DIMENSIONS: Mapping[str, Callable[[LedgerRow], str]] = {
    "hour": lambda r: r.at.strftime("%Y-%m-%dT%H:00:00Z"),
    "day": lambda r: r.at.strftime("%Y-%m-%d"),
    "month": lambda r: r.at.strftime("%Y-%m"),
    "model": lambda r: r.model,
    "provider": lambda r: r.provider,
    "project": lambda r: r.project,
    "status": lambda r: r.status,
}


def check_group_by(group_by: tuple[str, ...]) -> None:
    for name in group_by:
        if name not in DIMENSIONS:
            raise InvalidRequest(
                f"Cannot group by '{name}'; use any of: {', '.join(DIMENSIONS)}",
                param="group_by",
            )
    if len(set(group_by)) != len(group_by):
        raise InvalidRequest("group_by names a dimension more than once", param="group_by")


def aggregate(rows: Iterable[LedgerRow], group_by: tuple[str, ...]) -> UsageSummary:
    """Sum `rows` overall and per distinct value of the `group_by` dimensions."""
    check_group_by(group_by)
    keyers = [(name, DIMENSIONS[name]) for name in group_by]
    return combine(
        (tuple((name, keyer(row)) for name, keyer in keyers), Totals.of(row)) for row in rows
    )


def combine(parts: Iterable[tuple[GroupKey, Totals]]) -> UsageSummary:
    """The summary of rows given as partial sums per group key (see the rules)."""
    totals = Totals()
    groups: dict[GroupKey, Totals] = {}
    for key, part in parts:
        totals = totals + part
        groups[key] = groups.get(key, Totals()) + part
    return UsageSummary(
        totals=totals,
        groups=tuple(Group(key, groups[key]) for key in sorted(groups)),
    )
