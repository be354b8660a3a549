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
Series, histograms and totals read each part of a window from the source `sources.plan`
picks: the whole days from the daily rollup (`usage_daily`, migration 011, when the read
is by day), whole hours from the all-tenant hourly rollup by model, the all-tenant or
the per-tenant hourly rollup (`usage_hourly_model`, migration 014; `usage_hourly_all`,
migration 012; `usage_hourly_nokey`, migration 009), the partial
hours at the edges, and an hourly read on a key, from the ledger (`usage_key_at` finds
a key's rows); each a range on the period, summed in SQL.
`series_queries` / `histogram_queries` / `totals_queries` give those queries and
`merge_series` / `merge_histograms` / `core.usage.combine` add their answers up per
(bucket, group or bin), so the result is the same as summing the window's ledger rows.

Rules:
- Money stays exact. Postgres sums NUMERIC. SQLite keeps cost as text with exactly 10
  decimal places (in the ledger and in the rollups), so removing the point gives an
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
from typing import Any, Literal, NamedTuple

from attrs import evolve, frozen

from adapters.storage import codec, rollup, rollup_wide
from adapters.storage.sources import ROLLUPS, Grain, Part, Source, answers, plan
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


class SeriesRow(NamedTuple):
    """One (bucket, group) of a series (a named tuple: a 30-day hourly page decodes
    thousands of them)."""

    bucket: str  # "2026-01-02T03" (hour) or "2026-01-02" (day), UTC
    group: str  # the grouped column's value ("" when not grouped, or NULL)
    requests: int
    errors: int  # rows whose status is not "ok"
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    cost: Decimal


# A histogram per bucket: bucket -> how many values each `core.percentiles` bin holds
# (`percentiles.BINS` counts, bin 0 first), in bucket order; a bucket without values is
# left out.
Histogram = dict[str, list[int]]


@frozen
class Dialect:
    mark: str  # the driver's placeholder
    hour: str  # `at` cut to its hour, as YYYY-MM-DDTHH text
    day: str  # `at` cut to its day, as YYYY-MM-DD text
    month: str  # `at` cut to its month, as YYYY-MM text
    cost_sum: str  # an exact sum of `cost` (of the ledger or a rollup)
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


def where(d: Dialect, f: LedgerFilter, part: Part | None = None) -> tuple[str, list[Any]]:
    """The filter's condition on the ledger (a range on `at`), or, given a rollup's
    `part`, on that rollup (a range on its period: `[first, past)`)."""
    if part is not None and part.source is not None and f.client_request_id is not None:
        raise ValueError("the rollups have no client_request_id to filter on")
    if part is None or part.source is None:
        clauses = [f"at >= {d.mark}", f"at < {d.mark}"]
        args: list[Any] = [d.time(f.start), d.time(f.end)]
    else:
        source = part.source
        if not set(filters_set(f)) <= source.columns:
            raise ValueError(f"{source.table} cannot filter on {filters_set(f)}")
        clauses = [f"{source.grain} >= {d.mark}", f"{source.grain} < {d.mark}"]
        args = list(part.periods())
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


Query = tuple[str, list[Any]]


def _rollup_of(part: Part | None) -> Source | None:
    return None if part is None else part.source


def _bucket(d: Dialect, bucket: Bucket, source: Source | None) -> str:
    """The bucket of a row: of the ledger's `at`, or of a rollup's period."""
    if source is None:
        return d.hour if bucket == "hour" else d.day
    if bucket == "hour" and source.grain != "hour":
        raise ValueError(f"{source.table} has no hours")
    return source.grain if bucket == source.grain else f"substr({source.grain}, 1, 10)"


def _sums(d: Dialect, source: Source | None) -> str:
    """Requests, errors, the four token sums and cost, of ledger rows or rollup rows, and
    the table they come from."""
    if source is None:
        return (
            "count(*), sum(CASE WHEN status = 'ok' THEN 0 ELSE 1 END),"
            " sum(input_tokens), sum(output_tokens), sum(cached_input_tokens),"
            f" sum(cache_write_tokens), {d.cost_sum} FROM usage"
        )
    return (
        "sum(requests), sum(CASE WHEN status = 'ok' THEN 0 ELSE requests END),"
        " sum(input_tokens), sum(output_tokens), sum(cached_input_tokens),"
        f" sum(cache_write_tokens), {d.cost_sum} FROM {source.table}"
    )


def sources(
    f: LedgerFilter, by: str | None = None, grain: Grain = "hour", rollups: tuple[Source, ...] = ROLLUPS
) -> list[Part]:
    """Where a read of `f` grouped on `by`, at `grain`, comes from: its window's parts,
    each from a rollup's whole periods or from the ledger (`sources.plan`)."""
    used = [*filters_set(f), *([] if by is None else [by])]
    return plan(f.start, f.end, used, grain, rollups)


def _part_filter(f: LedgerFilter, part: Part) -> LedgerFilter:
    return evolve(f, start=part.start, end=part.end)


def series_query(
    d: Dialect, f: LedgerFilter, bucket: Bucket, by: str | None, part: Part | None = None
) -> Query:
    """Requests, errors, tokens and cost per (bucket, value of `by`): of the ledger rows
    in the filter's window, or, given a rollup's `part`, of its whole periods."""
    if by is not None and by not in GROUP_COLUMNS:
        raise ValueError(f"cannot group the ledger by {by!r}")
    source = _rollup_of(part)
    if source is not None and by is not None and by not in source.columns:
        raise ValueError(f"{source.table} cannot group by {by!r}")
    group = "''" if by is None else f"coalesce({by}, '')"
    cond, args = where(d, f if part is None else _part_filter(f, part), part)
    sql = (
        f"SELECT {_bucket(d, bucket, source)} AS b, {group} AS g, {_sums(d, source)}"
        f" WHERE {cond} GROUP BY 1, 2 ORDER BY 1, 2"
    )
    return sql, args


def series_queries(
    d: Dialect, f: LedgerFilter, bucket: Bucket, by: str | None, rollups: tuple[Source, ...] = ROLLUPS
) -> list[Query]:
    """The queries whose answers, merged (`merge_series`), are the window's series: one
    per part of the window (`sources`)."""
    return [series_query(d, _part_filter(f, p), bucket, by, p)
            for p in sources(f, by, bucket, rollups)]  # fmt: skip


def bin_case(column: str) -> str:
    """SQL giving `core.percentiles.bin_of(column)`."""
    whens = " ".join(
        f"WHEN {column} < {bound} THEN {i}" for i, bound in enumerate(percentiles.BOUNDS_MS)
    )
    return f"CASE {whens} ELSE {len(percentiles.BOUNDS_MS)} END"


def histogram_query(
    d: Dialect, f: LedgerFilter, bucket: Bucket, metric: Metric, part: Part | None = None,
) -> Query:  # fmt: skip
    """How many rows per (bucket, bin of `metric`), rows without that metric left out: of
    the ledger in the filter's window, or, given a rollup's `part`, of its whole periods.
    Rows of (bucket, bin, count), or from a rollup with bin columns one row per bucket
    with the count of every bin (`histogram_counts` reads both)."""
    if metric not in rollup.METRICS:
        raise ValueError(f"no histogram of {metric!r}")
    source = _rollup_of(part)
    cond, args = where(d, f if part is None else _part_filter(f, part), part)
    b = _bucket(d, bucket, source)
    if source is None:
        sql = (
            f"SELECT {b} AS b, {bin_case(metric)} AS h, count(*)"
            f" FROM usage WHERE {cond} AND {metric} IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2"
        )
        return sql, args
    if source.bins is not None:
        sql = (
            f"SELECT {b} AS b, bin AS h, sum(n) FROM {source.bins}"
            f" WHERE {cond} AND metric = {d.mark} GROUP BY 1, 2 ORDER BY 1, 2"
        )
        return sql, [*args, metric]
    counts = ", ".join(f"sum({c})" for c in rollup_wide.bin_columns(metric))
    return f"SELECT {b} AS b, {counts} FROM {source.table} WHERE {cond} GROUP BY 1 ORDER BY 1", args


def histogram_queries(
    d: Dialect, f: LedgerFilter, bucket: Bucket, metric: Metric, rollups: tuple[Source, ...] = ROLLUPS
) -> list[Query]:
    """As `series_queries`, for the histogram of `metric` (read by `histogram_counts`,
    merged by `merge_histograms`)."""
    return [histogram_query(d, _part_filter(f, p), bucket, metric, p)
            for p in sources(f, None, bucket, rollups)]  # fmt: skip


# /v1/usage's dimensions (`core.usage.DIMENSIONS`) in SQL, each giving the text that
# core.usage gives for a row: (on the ledger, in a dialect; on a rollup, of its period
# column). The daily rollup has no hours (`_TOTALS_GRAIN`).
DIMENSIONS: Mapping[str, tuple[Callable[[Dialect], str], Callable[[str], str]]] = {
    "hour": (lambda d: f"{d.hour} || ':00:00Z'", lambda t: f"{t} || ':00:00Z'"),
    "day": (lambda d: d.day, lambda t: f"substr({t}, 1, 10)"),
    "month": (lambda d: d.month, lambda t: f"substr({t}, 1, 7)"),
    "model": (lambda d: "model", lambda t: "model"),
    "provider": (lambda d: "coalesce(provider, '')", lambda t: "provider"),
    "project": (lambda d: "project", lambda t: "project"),
    "status": (lambda d: "status", lambda t: "status"),
}
_GROUPED = frozenset({"model", "provider", "project", "status"})  # dims that are columns


def _totals_grain(dims: tuple[str, ...]) -> Grain:
    return "hour" if "hour" in dims else "day"


def totals_query(
    d: Dialect, f: LedgerFilter, dims: tuple[str, ...], part: Part | None = None
) -> Query:
    """Requests, errors, tokens and cost per distinct value of the `dims` (one row, with
    no dims): of the ledger rows in the filter's window or, given a rollup's `part`, of
    its whole periods."""
    unknown = [name for name in dims if name not in DIMENSIONS]
    if unknown:
        raise ValueError(f"cannot total the ledger by {unknown}")
    source = _rollup_of(part)
    if source is not None and not _totals_answer(source, dims):
        raise ValueError(f"{source.table} cannot total by {dims}")
    cols = [DIMENSIONS[n][0](d) if source is None else DIMENSIONS[n][1](source.grain) for n in dims]
    cond, args = where(d, f if part is None else _part_filter(f, part), part)
    group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(dims)))}" if dims else ""
    return f"SELECT {''.join(c + ', ' for c in cols)}{_sums(d, source)} WHERE {cond}{group}", args


def _totals_answer(source: Source, dims: tuple[str, ...]) -> bool:
    return answers(source, [n for n in dims if n in _GROUPED], _totals_grain(dims))


def totals_queries(
    d: Dialect, f: LedgerFilter, dims: tuple[str, ...], rollups: tuple[Source, ...] = ROLLUPS
) -> list[Query]:
    """The queries whose answers (`totals_part`, added up by `core.usage.combine`) are the
    window's totals per group: one per part of the window (`sources`)."""
    used = [*filters_set(f), *(n for n in dims if n in _GROUPED)]
    parts = plan(f.start, f.end, used, _totals_grain(dims), rollups)
    return [totals_query(d, _part_filter(f, p), dims, p) for p in parts]


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


def histogram_counts(rows: Iterable[tuple[Any, ...]]) -> Histogram:
    """A `histogram_query`'s answer as counts per bucket: its rows are (bucket, bin,
    count), or (bucket, count of bin 0, ..., count of the last bin) from a rollup with
    bin columns."""
    out: Histogram = {}
    for row in rows:
        if len(row) == 3:
            counts = out.get(str(row[0]))
            if counts is None:
                out[str(row[0])] = counts = [0] * percentiles.BINS
            counts[int(row[1])] += int(row[2])
            continue
        if len(row) != 1 + percentiles.BINS:
            raise ValueError(f"a histogram row has 3 or {1 + percentiles.BINS} values, not {len(row)}")
        seen = out.get(str(row[0]))
        wide = [int(n or 0) for n in row[1:]]
        out[str(row[0])] = wide if seen is None else [a + b for a, b in zip(seen, wide, strict=True)]
    return out


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


def merge_histograms(parts: Iterable[Histogram]) -> Histogram:
    """The counts of the same bucket added up, in bucket order, buckets without a value
    left out (a rollup row may carry none: its rows had no latency)."""
    merged: Histogram = {}
    for part in parts:
        for bucket, counts in part.items():
            seen = merged.get(bucket)
            merged[bucket] = counts if seen is None else [a + b for a, b in zip(seen, counts, strict=True)]
    return {b: merged[b] for b in sorted(merged) if any(merged[b])}
