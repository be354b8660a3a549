"""Reads of the usage ledger for the admin API and the console: filtered pages of rows,
time series of requests, tokens and cost, and latency histograms.

Owns: the SQL of those reads, written once for both backends. The two dialects differ
only in the placeholder, in how an instant is cut to its hour or day, and in how money
is summed exactly; `SQLITE` and `POSTGRES` say how. Every query is a range on `at`
(plus equality filters), so it can use one of the indexes `usage_at (at, id)`,
`usage_tenant_at_id (tenant, at, id)` or `usage_key_at (key_id, at, id)` (migration 002;
`tests/adapters/test_ledger_queries.py` checks the plans on both backends).

Rules:
- Money stays exact. Postgres sums NUMERIC. SQLite keeps cost as text with exactly 10
  decimal places, so removing the point gives an integer count of 1e-10 dollars, which
  SQLite sums exactly in 64 bits (an overflow, past 922 million dollars in one group,
  is an error, never a rounded number); `money_from_units` turns it back.
- Buckets come back as text of one shape on both backends: `YYYY-MM-DDTHH` for hours,
  `YYYY-MM-DD` for days (UTC).
- Latency bins are `core.percentiles.bin_of`, written as one SQL CASE.
- Paging is keyset on `(at, id)`, newest first; `after` is the `id` of the last row of the
  previous page (an unknown id, or one outside the filter's tenant, gives an empty page).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from attrs import frozen

from adapters.storage import codec
from core import percentiles

Bucket = Literal["hour", "day"]
Metric = Literal["latency_ms", "ttft_ms"]
FILTER_COLUMNS = ("tenant", "project", "key_id", "model", "provider", "status")
GROUP_COLUMNS = ("model", "provider", "project", "tenant", "key_id", "status", "deployment")


@frozen
class LedgerFilter:
    """Rows with `start <= at < end` whose columns equal every filter that is set."""

    start: datetime
    end: datetime
    tenant: str | None = None
    project: str | None = None
    key_id: str | None = None
    model: str | None = None
    provider: str | None = None
    status: str | None = None


@frozen
class SeriesRow:
    bucket: str  # "2026-01-02T03" (hour) or "2026-01-02" (day), UTC
    group: str  # the grouped column's value ("" when not grouped, or NULL)
    requests: int
    errors: int  # rows whose status is not "ok"
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    cost: Decimal


@frozen
class HistogramRow:
    bucket: str
    bin: int  # core.percentiles bin index
    count: int


@frozen
class Dialect:
    mark: str  # the driver's placeholder
    hour: str  # `at` cut to its hour, as YYYY-MM-DDTHH text
    day: str  # `at` cut to its day, as YYYY-MM-DD text
    cost_sum: str  # an exact sum of `cost`
    time: Callable[[datetime], Any]  # how an instant is bound


SQLITE = Dialect(
    mark="?",
    hour="substr(at, 1, 13)",
    day="substr(at, 1, 10)",
    cost_sum="sum(CAST(replace(cost, '.', '') AS INTEGER))",
    time=codec.iso,
)
POSTGRES = Dialect(
    mark="%s",
    hour="to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24')",
    day="to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    cost_sum="sum(cost)",
    time=codec.utc,
)


def money_from_units(value: Any) -> Decimal:
    """A summed cost from either backend as an exact Decimal with 10 places (SQLite
    sums integer units of 1e-10 dollars; Postgres sums NUMERIC(30,10))."""
    if value is None:
        return Decimal(0).scaleb(-10)
    if isinstance(value, int):
        return Decimal(value).scaleb(-10)
    return Decimal(value)


def where(d: Dialect, f: LedgerFilter) -> tuple[str, list[Any]]:
    clauses = [f"at >= {d.mark}", f"at < {d.mark}"]
    args: list[Any] = [d.time(f.start), d.time(f.end)]
    for column in FILTER_COLUMNS:
        value = getattr(f, column)
        if value is not None:
            clauses.append(f"{column} = {d.mark}")
            args.append(value)
    return " AND ".join(clauses), args


def page_query(
    d: Dialect, columns: str, f: LedgerFilter, limit: int, after: str | None
) -> tuple[str, list[Any]]:
    """One page of rows, newest first, after the row `after` (keyset on (at, id))."""
    cond, args = where(d, f)
    if after is not None:
        scope = "" if f.tenant is None else f" AND tenant = {d.mark}"
        cond += f" AND (at, id) < (SELECT at, id FROM usage WHERE id = {d.mark}{scope})"
        args += [after] if f.tenant is None else [after, f.tenant]
    sql = f"SELECT {columns} FROM usage WHERE {cond} ORDER BY at DESC, id DESC LIMIT {d.mark}"
    return sql, [*args, limit]


def _bucket(d: Dialect, bucket: Bucket) -> str:
    return d.hour if bucket == "hour" else d.day


def series_query(
    d: Dialect, f: LedgerFilter, bucket: Bucket, by: str | None
) -> tuple[str, list[Any]]:
    """Requests, errors, tokens and cost per (bucket, value of `by`)."""
    if by is not None and by not in GROUP_COLUMNS:
        raise ValueError(f"cannot group the ledger by {by!r}")
    group = "''" if by is None else f"coalesce({by}, '')"
    cond, args = where(d, f)
    sql = (
        f"SELECT {_bucket(d, bucket)} AS b, {group} AS g, count(*),"
        " sum(CASE WHEN status = 'ok' THEN 0 ELSE 1 END),"
        " sum(input_tokens), sum(output_tokens), sum(cached_input_tokens),"
        f" sum(cache_write_tokens), {d.cost_sum}"
        f" FROM usage WHERE {cond} GROUP BY 1, 2 ORDER BY 1, 2"
    )
    return sql, args


def bin_case(column: str) -> str:
    """SQL giving `core.percentiles.bin_of(column)`."""
    whens = " ".join(
        f"WHEN {column} < {bound} THEN {i}" for i, bound in enumerate(percentiles.BOUNDS_MS)
    )
    return f"CASE {whens} ELSE {len(percentiles.BOUNDS_MS)} END"


def histogram_query(
    d: Dialect, f: LedgerFilter, bucket: Bucket, metric: Metric
) -> tuple[str, list[Any]]:
    """How many rows per (bucket, bin of `metric`), rows without that metric left out."""
    if metric not in ("latency_ms", "ttft_ms"):
        raise ValueError(f"no histogram of {metric!r}")
    cond, args = where(d, f)
    sql = (
        f"SELECT {_bucket(d, bucket)} AS b, {bin_case(metric)} AS h, count(*)"
        f" FROM usage WHERE {cond} AND {metric} IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2"
    )
    return sql, args


def series_row(row: tuple[Any, ...]) -> SeriesRow:
    b, g, n, errors, inp, out, cached, written, cost = row
    return SeriesRow(
        bucket=str(b),
        group=str(g),
        requests=int(n),
        errors=int(errors or 0),
        input_tokens=int(inp or 0),
        output_tokens=int(out or 0),
        cached_input_tokens=int(cached or 0),
        cache_write_tokens=int(written or 0),
        cost=money_from_units(cost),
    )


def histogram_row(row: tuple[Any, ...]) -> HistogramRow:
    return HistogramRow(bucket=str(row[0]), bin=int(row[1]), count=int(row[2]))
