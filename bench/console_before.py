"""`make bench-console`'s "main" column: the Usage page's Python as it was before the
console task (main at e7e6204), kept to time it beside the code as served.

Owns nothing the gateway runs. What it keeps: a frozen attrs object per series row and
per (bucket, bin) of a histogram, the histograms merged as such objects, then turned
back into a dict per bucket, and `core.percentiles.percentile` called once per quantile
and bucket; the answer is built as `server/routes/insights.py` builds it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from attrs import frozen

from adapters.storage import ledger
from core import percentiles
from server.routes import insights


@frozen
class SeriesRow:
    bucket: str
    group: str
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    cost: Decimal


@frozen
class HistogramRow:
    bucket: str
    bin: int
    count: int


def series_row(row: tuple[Any, ...]) -> SeriesRow:
    b, g, n, errors, inp, out, cached, written, cost = row
    return SeriesRow(str(b), str(g), int(n), int(errors or 0), int(inp or 0), int(out or 0),
                     int(cached or 0), int(written or 0), ledger.money_from_units(cost))  # fmt: skip


def merge_series(rows: list[SeriesRow]) -> list[SeriesRow]:
    merged: dict[tuple[str, str], SeriesRow] = {}
    for r in rows:
        seen = merged.get((r.bucket, r.group))
        merged[(r.bucket, r.group)] = r if seen is None else SeriesRow(
            r.bucket, r.group, seen.requests + r.requests, seen.errors + r.errors,
            seen.input_tokens + r.input_tokens, seen.output_tokens + r.output_tokens,
            seen.cached_input_tokens + r.cached_input_tokens,
            seen.cache_write_tokens + r.cache_write_tokens, seen.cost + r.cost,
        )  # fmt: skip
    return [merged[k] for k in sorted(merged)]


def histogram_rows(rows: Iterable[tuple[Any, ...]]) -> list[HistogramRow]:
    out = []
    for row in rows:
        if len(row) == 3:
            out.append(HistogramRow(str(row[0]), int(row[1]), int(row[2])))
            continue
        out += [HistogramRow(str(row[0]), i, int(n)) for i, n in enumerate(row[1:]) if n]
    return out


def merge_histogram(rows: list[HistogramRow]) -> list[HistogramRow]:
    counts: dict[tuple[str, int], int] = {}
    for r in rows:
        counts[(r.bucket, r.bin)] = counts.get((r.bucket, r.bin), 0) + r.count
    return [HistogramRow(b, i, n) for (b, i), n in sorted(counts.items())]


def _percentiles(counts: dict[int, int]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, q in insights.QUANTILES:
        value = percentiles.percentile(counts, q)
        out[name] = None if value is None else round(value, 1)
    out["count"] = sum(counts.values())
    return out


def latency_series(rows: list[HistogramRow]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    by_bucket: dict[str, dict[int, int]] = defaultdict(dict)
    for r in rows:
        by_bucket[r.bucket][r.bin] = r.count
    series = [{"at": insights._bucket_start(b), **_percentiles(counts)}
              for b, counts in sorted(by_bucket.items())]  # fmt: skip
    return series, _percentiles(percentiles.merge(by_bucket.values()))


def answer(
    f: ledger.LedgerFilter, bucket: Any, by: str | None, series: list[list[tuple[Any, ...]]],
    latency: list[list[tuple[Any, ...]]], ttft: list[list[tuple[Any, ...]]],
) -> dict[str, Any]:  # fmt: skip
    """The page's answer from the three reads' rows (one list per query), as main built it."""
    rows = merge_series([series_row(r) for part in series for r in part])
    lat, lat_all = latency_series(merge_histogram([h for part in latency for h in histogram_rows(part)]))
    tt, tt_all = latency_series(merge_histogram([h for part in ttft for h in histogram_rows(part)]))
    body = insights.series_answer(f, bucket, by, rows, {}, {})  # type: ignore[arg-type]
    return {**body, "latency": lat, "ttft": tt,
            "totals": {**body["totals"], "latency_ms": lat_all, "ttft_ms": tt_all}}  # fmt: skip
