"""The rollups that keep their percentile bins as columns: the daily rollup `usage_daily`
(migration 011, with the key) and the all-tenant hourly rollup `usage_hourly_all`
(migration 012, without tenant or key).

Owns: what ledger rows add to these two tables and the upserts that add it (run by each
backend in the transaction that inserts those rows, next to `rollup.py`'s hourly ones).
Which reads they answer is `sources.py`'s.

Rules:
- A row's key is its period (`day`: `YYYY-MM-DD`, or `hour`: `YYYY-MM-DDTHH`, UTC, the
  ledger reads' buckets) plus `Wide.columns`: every column a ledger read filters or
  groups on that the table keeps. NULL provider or deployment is '' (as in `rollup.py`).
- The measures are `rollup.MEASURES` (requests, the five token sums, cost, latency and
  TTFT sums and counts), then one count per `core.percentiles` bin of latency and of
  TTFT (`BIN_COLUMNS`): one row carries its histograms, so a row of the ledger adds to
  one row of each table (one upsert), and a histogram read sums columns of few rows
  instead of a row per bin.
- Cost is exact and never overflows, as in `rollup.py`: Postgres NUMERIC added in SQL;
  SQLite text with exactly 10 places, added in Python (`rollup.add_costs`, the row's
  cost read in the writer's transaction: `select_cost`).
- Rows of one batch with the same key are added up first: one upsert per key; the
  backends run them in sorted key order (Postgres: several writers cannot deadlock).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Literal

from attrs import frozen

from adapters.storage import rollup
from adapters.storage.records import UsageRecord
from core import percentiles

DAILY = "usage_daily"
HOURLY_ALL = "usage_hourly_all"


def bin_columns(metric: str) -> tuple[str, ...]:
    """The count columns of `metric`'s histogram: `<metric>_b<i>` per bin `i`."""
    return tuple(f"{metric}_b{i}" for i in range(percentiles.BINS))


BIN_COLUMNS = tuple(c for metric in rollup.METRICS for c in bin_columns(metric))
MEASURES = (*rollup.MEASURES, *BIN_COLUMNS)
COST = rollup.MEASURES.index("cost")  # where the cost is among the measures


@frozen
class Wide:
    table: str
    grain: Literal["hour", "day"]  # the period, and the name of its column
    columns: tuple[str, ...]  # the key's columns after the period

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.grain, *self.columns)


DAY = Wide(DAILY, "day", ("tenant", "project", "key_id", "model", "provider", "deployment", "status"))
ALL = Wide(HOURLY_ALL, "hour", ("project", "model", "provider", "deployment", "status"))
TABLES = (DAY, ALL)  # in the order the writers upsert them
_OPTIONAL = frozenset({"provider", "deployment"})  # NULL in the ledger, '' here
_METRIC_AT = {m: i for i, m in enumerate(rollup.METRICS)}


def period(grain: str, hour: str) -> str:
    """The period text of a row whose hour text is `hour`."""
    return hour if grain == "hour" else hour[:10]


def contributions(wide: Wide, records: Iterable[UsageRecord]) -> list[tuple[Any, ...]]:
    """What `records` add to `wide`: one row per key, as the upsert's arguments (the key,
    then `MEASURES`; cost a Decimal), in key order."""
    sums: dict[tuple[Any, ...], list[Any]] = {}
    nbins = percentiles.BINS
    for rec in records:
        key = (period(wide.grain, rollup.hour_of(rec.at)),
               *((getattr(rec, c) or "") if c in _OPTIONAL else getattr(rec, c) for c in wide.columns))  # fmt: skip
        row = sums.get(key)
        if row is None:
            row = sums[key] = [0] * len(MEASURES)
            row[COST] = Decimal(0)
        latency, ttft = rec.latency_ms, rec.ttft_ms
        row[0] += 1
        row[1] += rec.input_tokens
        row[2] += rec.output_tokens
        row[3] += rec.cached_input_tokens
        row[4] += rec.cache_write_tokens
        row[5] += rec.reasoning_tokens
        row[COST] = rollup.WIDE_CONTEXT.add(row[COST], rec.cost)
        for metric, value in (("latency_ms", latency), ("ttft_ms", ttft)):
            if value is not None:
                at = 7 + 2 * _METRIC_AT[metric]  # its sum, then its count
                row[at] += value
                row[at + 1] += 1
                row[len(rollup.MEASURES) + nbins * _METRIC_AT[metric] + percentiles.bin_of(value)] += 1
    return [(*key, *row) for key, row in sorted(sums.items())]


def upsert(wide: Wide, mark: str, *, cost_added_by_caller: bool) -> str:
    replaced = ("cost",) if cost_added_by_caller else ()
    return rollup.upsert_sql(wide.table, wide.keys, MEASURES, mark, replaced)


def select_cost(wide: Wide) -> str:
    return rollup.select_cost(wide.table, wide.keys)
