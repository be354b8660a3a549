"""Reads of the usage ledger for the admin API, the console and `/v1/usage`: filtered
pages of rows, time series of requests, tokens and cost, latency histograms, and usage
totals per group.

Owns: the SQL of those reads, written once for both backends, and where each read comes
from (`sources`). The two dialects differ only in the placeholder, in how an instant is
cut to its hour, day or month, and in how money is summed exactly; `SQLITE` and
`POSTGRES` say how. Every query on the ledger is a range on `at` (plus equality filters),
so it can use one of the indexes `usage_at (at, id)`, `usage_tenant_at_id (tenant, at,
id)` or `usage_key_at (key_id, at, id)` (migration 002;
`tests/adapters/test_ledger_queries.py` checks the plans on both backends).
Series, histograms and totals read the whole hours of a window from the hourly rollup
(`rollup.py`, migration 009: a range on `hour`, summed in SQL) and only the partial hours
at its edges from the ledger; a read filtered or grouped by key reads the ledger for the
whole window (the rollup has no key; `usage_key_at` finds the key's rows).
`series_queries` / `histogram_queries` / `totals_queries` give those queries and
`merge_series` / `merge_histogram` / `core.usage.combine` add their answers up per
(bucket, group or bin), so the result is the same as summing the window's ledger rows.

Rules:
- Money stays exact. Postgres sums NUMERIC. SQLite keeps cost as text with exactly 10
  decimal places (in the ledger and in the rollup), so removing the point gives an
  integer count of 1e-10 dollars, which SQLite sums exactly in 64 bits (an overflow,
  past 922 million dollars in one group, is an error, never a rounded number);
  `money_from_units` turns it back.
- Buckets come back as text of one shape on both backends: `YYYY-MM-DDTHH` for hours,
  `YYYY-MM-DD` for days (UTC). Totals' periods are `core.usage.DIMENSIONS`' texts.
- Latency bins are `core.percentiles.bin_of`, written as one SQL CASE.
- Paging is keyset on `(at, id)`, newest first; `after` is the `id` of the last row of the
  previous page (an unknown id, or one outside the filter's tenant, gives an empty page).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from attrs import evolve, frozen

from adapters.storage import codec, rollup
from core import percentiles
from core.usage import GroupKey, Totals

Bucket = Literal["hour", "day"]
Metric = Literal["latency_ms", "ttft_ms"]
FILTER_COLUMNS = ("tenant", "project", "key_id", "model", "provider", "status")
GROUP_COLUMNS = ("model", "provider", "project", "tenant", "key_id", "status", "deployment")


@frozen
class LedgerFilter:
    """Rows with `start <= at < end` whose columns equal every filter that is set.
    `client_request_id` (the id a client sent in `x-request-id`) is for reading rows only:
    the rollups do not keep it, so a series never filters on it."""

    start: datetime
    end: datetime
    tenant: str | None = None
    project: str | None = None
    key_id: str | None = None
    model: str | None = None
    provider: str | None = None
    status: str | None = None
    client_request_id: str | None = None


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
    month: str  # `at` cut to its month, as YYYY-MM text
    cost_sum: str  # an exact sum of `cost`
    time: Callable[[datetime], Any]  # how an instant is bound


SQLITE = Dialect(
    mark="?",
    hour="substr(at, 1, 13)",
    day="substr(at, 1, 10)",
    month="substr(at, 1, 7)",
    cost_sum="sum(CAST(replace(cost, '.', '') AS INTEGER))",
    time=codec.iso,
)
POSTGRES = Dialect(
    mark="%s",
    hour="to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24')",
    day="to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    month="to_char(at AT TIME ZONE 'UTC', 'YYYY-MM')",
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


def filters_set(f: LedgerFilter) -> list[str]:
    return [c for c in FILTER_COLUMNS if getattr(f, c) is not None]


def where(d: Dialect, f: LedgerFilter, hours: tuple[str, str] | None = None) -> tuple[str, list[Any]]:
    """The filter's condition on the ledger (a range on `at`), or, given `hours`, on the
    rollup (a range on `hour`: `[first, past)`)."""
    if hours is not None and not rollup.answers(filters_set(f)):
        raise ValueError("the rollup has no key_id to filter on")
    if hours is not None and f.client_request_id is not None:
        raise ValueError("the rollup has no client_request_id to filter on")
    if hours is None:
        clauses = [f"at >= {d.mark}", f"at < {d.mark}"]
        args: list[Any] = [d.time(f.start), d.time(f.end)]
    else:
        clauses = [f"hour >= {d.mark}", f"hour < {d.mark}"]
        args = list(hours)
    for column in FILTER_COLUMNS:
        value = getattr(f, column)
        if value is not None:
            clauses.append(f"{column} = {d.mark}")
            args.append(value)
    if f.client_request_id is not None:
        clauses.append(f"client_request_id = {d.mark}")
        args.append(f.client_request_id)
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


def _rollup_bucket(bucket: Bucket) -> str:
    return "hour" if bucket == "hour" else "substr(hour, 1, 10)"


Query = tuple[str, list[Any]]


def _sums(d: Dialect, hours: tuple[str, str] | None) -> str:
    """Requests, errors, the four token sums and cost, of ledger rows or rollup rows, and
    the table they come from."""
    if hours is None:
        return (
            "count(*), sum(CASE WHEN status = 'ok' THEN 0 ELSE 1 END),"
            " sum(input_tokens), sum(output_tokens), sum(cached_input_tokens),"
            f" sum(cache_write_tokens), {d.cost_sum} FROM usage"
        )
    return (
        "sum(requests), sum(CASE WHEN status = 'ok' THEN 0 ELSE requests END),"
        " sum(input_tokens), sum(output_tokens), sum(cached_input_tokens),"
        f" sum(cache_write_tokens), {d.cost_sum} FROM {rollup.HOURLY}"
    )


def sources(
    f: LedgerFilter, by: str | None = None
) -> tuple[tuple[str, str] | None, list[LedgerFilter]]:
    """Where a read of `f` grouped on `by` comes from: the rollup's whole hours (None for
    none) and the filters of the ledger's parts of the window. A read on the key is not
    the rollup's (`rollup.answers`): its whole window is the ledger's."""
    if not rollup.answers(filters_set(f), by):
        return None, [f]
    hours, edges = rollup.split(f.start, f.end)
    return hours, [evolve(f, start=a, end=b) for a, b in edges]


def series_query(
    d: Dialect, f: LedgerFilter, bucket: Bucket, by: str | None, hours: tuple[str, str] | None = None
) -> Query:
    """Requests, errors, tokens and cost per (bucket, value of `by`): of the ledger rows
    in the filter's window, or, given `hours`, of the rollup's whole hours `[first, past)`."""
    if by is not None and by not in GROUP_COLUMNS:
        raise ValueError(f"cannot group the ledger by {by!r}")
    if hours is not None and not rollup.answers((), by):
        raise ValueError(f"the rollup cannot group by {by!r}")
    group = "''" if by is None else f"coalesce({by}, '')"
    cond, args = where(d, f, hours)
    b = _bucket(d, bucket) if hours is None else _rollup_bucket(bucket)
    sql = f"SELECT {b} AS b, {group} AS g, {_sums(d, hours)} WHERE {cond} GROUP BY 1, 2 ORDER BY 1, 2"
    return sql, args


def series_queries(d: Dialect, f: LedgerFilter, bucket: Bucket, by: str | None) -> list[Query]:
    """The queries whose answers, merged (`merge_series`), are the window's series: the
    rollup for its whole hours, the ledger for the rest (`sources`)."""
    hours, parts = sources(f, by)
    queries = [] if hours is None else [series_query(d, f, bucket, by, hours)]
    return queries + [series_query(d, part, bucket, by) for part in parts]


def bin_case(column: str) -> str:
    """SQL giving `core.percentiles.bin_of(column)`."""
    whens = " ".join(
        f"WHEN {column} < {bound} THEN {i}" for i, bound in enumerate(percentiles.BOUNDS_MS)
    )
    return f"CASE {whens} ELSE {len(percentiles.BOUNDS_MS)} END"


def histogram_query(
    d: Dialect, f: LedgerFilter, bucket: Bucket, metric: Metric,
    hours: tuple[str, str] | None = None,
) -> Query:  # fmt: skip
    """How many rows per (bucket, bin of `metric`), rows without that metric left out: of
    the ledger in the filter's window, or, given `hours`, of the rollup's whole hours."""
    if metric not in rollup.METRICS:
        raise ValueError(f"no histogram of {metric!r}")
    cond, args = where(d, f, hours)
    if hours is None:
        sql = (
            f"SELECT {_bucket(d, bucket)} AS b, {bin_case(metric)} AS h, count(*)"
            f" FROM usage WHERE {cond} AND {metric} IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2"
        )
        return sql, args
    sql = (
        f"SELECT {_rollup_bucket(bucket)} AS b, bin AS h, sum(n) FROM {rollup.BINS}"
        f" WHERE {cond} AND metric = {d.mark} GROUP BY 1, 2 ORDER BY 1, 2"
    )
    return sql, [*args, metric]


def histogram_queries(d: Dialect, f: LedgerFilter, bucket: Bucket, metric: Metric) -> list[Query]:
    """As `series_queries`, for the histogram of `metric` (merged by `merge_histogram`)."""
    hours, parts = sources(f)
    queries = [] if hours is None else [histogram_query(d, f, bucket, metric, hours)]
    return queries + [histogram_query(d, part, bucket, metric) for part in parts]


# /v1/usage's dimensions (`core.usage.DIMENSIONS`) in SQL, each giving the text that
# core.usage gives for a row: (on the ledger, in a dialect; on the rollup).
DIMENSIONS: Mapping[str, tuple[Callable[[Dialect], str], str]] = {
    "hour": (lambda d: f"{d.hour} || ':00:00Z'", "hour || ':00:00Z'"),
    "day": (lambda d: d.day, "substr(hour, 1, 10)"),
    "month": (lambda d: d.month, "substr(hour, 1, 7)"),
    "model": (lambda d: "model", "model"),
    "provider": (lambda d: "coalesce(provider, '')", "provider"),
    "project": (lambda d: "project", "project"),
    "status": (lambda d: "status", "status"),
}


def totals_query(
    d: Dialect, f: LedgerFilter, dims: tuple[str, ...], hours: tuple[str, str] | None = None
) -> Query:
    """Requests, errors, tokens and cost per distinct value of the `dims` (one row, with
    no dims): of the ledger rows in the filter's window or, given `hours`, of the
    rollup's whole hours."""
    unknown = [name for name in dims if name not in DIMENSIONS]
    if unknown:
        raise ValueError(f"cannot total the ledger by {unknown}")
    cols = [DIMENSIONS[n][0](d) if hours is None else DIMENSIONS[n][1] for n in dims]
    cond, args = where(d, f, hours)
    group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(dims)))}" if dims else ""
    return f"SELECT {''.join(c + ', ' for c in cols)}{_sums(d, hours)} WHERE {cond}{group}", args


def totals_queries(d: Dialect, f: LedgerFilter, dims: tuple[str, ...]) -> list[Query]:
    """The queries whose answers (`totals_part`, added up by `core.usage.combine`) are the
    window's totals per group: the rollup's whole hours, the ledger for the rest."""
    hours, parts = sources(f)
    queries = [] if hours is None else [totals_query(d, f, dims, hours)]
    return queries + [totals_query(d, part, dims) for part in parts]


def totals_part(dims: tuple[str, ...], row: tuple[Any, ...]) -> tuple[GroupKey, Totals] | None:
    """One answer row of `totals_query` as (group key, totals); None for no rows (the
    one row of a query without dims over nothing)."""
    n, errors, inp, out, cached, written, cost = row[len(dims) :]
    if not n:
        return None
    inp, out, cached, written = (int(v or 0) for v in (inp, out, cached, written))
    key = tuple((name, str(value)) for name, value in zip(dims, row[: len(dims)], strict=True))
    return key, Totals(
        requests=int(n),
        errors=int(errors or 0),
        input_tokens=inp,
        output_tokens=out,
        cached_input_tokens=cached,
        cache_write_tokens=written,
        total_tokens=inp + out + cached + written,
        cost=money_from_units(cost),
    )


def totals_parts(dims: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> list[tuple[GroupKey, Totals]]:
    return [part for part in (totals_part(dims, r) for r in rows) if part is not None]


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


def merge_series(rows: list[SeriesRow]) -> list[SeriesRow]:
    """Rows of the same (bucket, group) added up, in (bucket, group) order."""
    merged: dict[tuple[str, str], SeriesRow] = {}
    for r in rows:
        seen = merged.get((r.bucket, r.group))
        merged[(r.bucket, r.group)] = r if seen is None else SeriesRow(
            bucket=r.bucket,
            group=r.group,
            requests=seen.requests + r.requests,
            errors=seen.errors + r.errors,
            input_tokens=seen.input_tokens + r.input_tokens,
            output_tokens=seen.output_tokens + r.output_tokens,
            cached_input_tokens=seen.cached_input_tokens + r.cached_input_tokens,
            cache_write_tokens=seen.cache_write_tokens + r.cache_write_tokens,
            cost=seen.cost + r.cost,
        )
    return [merged[k] for k in sorted(merged)]


def merge_histogram(rows: list[HistogramRow]) -> list[HistogramRow]:
    """Counts of the same (bucket, bin) added up, in (bucket, bin) order."""
    counts: dict[tuple[str, int], int] = {}
    for r in rows:
        counts[(r.bucket, r.bin)] = counts.get((r.bucket, r.bin), 0) + r.count
    return [HistogramRow(bucket=b, bin=i, count=n) for (b, i), n in sorted(counts.items())]
