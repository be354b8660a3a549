"""The rollups that keep their percentile bins as columns: the daily rollup `usage_daily`
(migration 011, with the key), the all-tenant hourly rollup `usage_hourly_all`
(migration 012, without tenant or key) and the hourly rollup by model
`usage_hourly_model` (migration 014, without tenant, key or project).

Owns: the tables' keys and measures; on SQLite, what ledger rows add to them and the
upserts that add it (run next to `rollup.py`'s hourly ones, behind the ledger,
`rollup_behind.py`; Postgres works the same sums out in SQL, `pg_batch_sql.py`).
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
  SQLite text with exactly 10 places, added in Python inside the upsert
  (`rollup.MONEY_ADD`).
- Rows of one batch with the same key are added up first (`sums`, each record's share
  worked out once for every table): one upsert per key, in sorted key order (as
  Postgres's single statement does, so several writers cannot deadlock). SQLite's
  upsert names only the bin columns it adds to (`SparseUpserts`; the others are
  DEFAULT 0).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Literal

from attrs import frozen

from adapters.storage import rollup
from adapters.storage.records import UsageRecord
from core import percentiles

DAILY = "usage_daily"
HOURLY_ALL = "usage_hourly_all"
HOURLY_MODEL = "usage_hourly_model"


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
MODEL = Wide(HOURLY_MODEL, "hour", ("model", "provider", "deployment", "status"))
TABLES = (DAY, ALL, MODEL)  # in the order the writers upsert them
_OPTIONAL = frozenset({"provider", "deployment"})  # NULL in the ledger, '' here
_NBINS = percentiles.BINS
_FIRST_BIN = len(rollup.MEASURES)  # where the bin counts begin among the measures

Key = tuple[Any, ...]
Sums = tuple[list[Any], dict[int, int]]  # the measures before the bins; bin column -> count


def period(grain: str, hour: str) -> str:
    """The period text of a row whose hour text is `hour`."""
    return hour if grain == "hour" else hour[:10]


def _bin(value: int) -> int:
    return bisect_right(percentiles.BOUNDS_MS, value)  # = percentiles.bin_of(value)


def sums(records: Iterable[UsageRecord]) -> dict[Wide, dict[Key, Sums]]:
    """What `records` add to each table, per key: the measures before the bins, and the
    count of each bin column that is not 0 (its index in `BIN_COLUMNS`). Each record's
    additions are worked out once, for every table."""
    out: dict[Wide, dict[Key, Sums]] = {wide: {} for wide in TABLES}
    for rec in records:
        hour = rollup.hour_of(rec.at)
        latency, ttft = rec.latency_ms, rec.ttft_ms
        adds: tuple[int | Decimal, ...] = (1, rec.input_tokens, rec.output_tokens, rec.cached_input_tokens,
                rec.cache_write_tokens, rec.reasoning_tokens, rec.cost,
                latency or 0, int(latency is not None), ttft or 0, int(ttft is not None))  # fmt: skip
        bins = ([] if latency is None else [_bin(latency)]) + ([] if ttft is None else [_NBINS + _bin(ttft)])
        for wide, table in out.items():
            key = (period(wide.grain, hour),
                   *((getattr(rec, c) or "") if c in _OPTIONAL else getattr(rec, c) for c in wide.columns))  # fmt: skip
            seen = table.get(key)
            if seen is None:
                table[key] = seen = ([0] * _FIRST_BIN, {})
                seen[0][COST] = Decimal(0)
            total = seen[0]
            for i, a in enumerate(adds):
                total[i] = rollup.WIDE_CONTEXT.add(total[i], a) if i == COST else total[i] + a
            counts = seen[1]
            for b in bins:
                counts[b] = counts.get(b, 0) + 1
    return out


def upsert(wide: Wide, mark: str, *, text_money: bool, rows: int = 1) -> str:
    """Insert a row of every measure, or add them to the row of its key (`rows` rows of
    distinct keys in one statement)."""
    return rollup.upsert_sql(wide.table, wide.keys, MEASURES, mark, text_money=text_money, rows=rows)


SPARSE_SETS = 48  # sets of bin columns with SQL of their own, per table
EVERY_BIN = tuple(range(len(BIN_COLUMNS)))  # the set every other one is written as


class SparseUpserts:
    """SQLite's upserts of what `sums` gives for `wide`, each naming only the bin columns
    its row adds to (the others keep their DEFAULT 0, or their value): one row of the
    ledger adds to at most two bin columns, and binding and rewriting all 70 would double
    the upsert's cost. Keeps the SQL of each set of bin columns it has written, at most
    `SPARSE_SETS` of them (one storage's writer holds one of these per table): a set
    met after that is written with every bin column (zeros for the others), so the
    SQL texts, and the prepared statements SQLite keeps for them, stay bounded however
    many sets a long-running writer meets (a batch's rows of one key add up to any
    number of bins; each wide statement SQLite prepares holds tens of KB)."""

    def __init__(self, wide: Wide, mark: str, *, text_money: bool) -> None:
        self.wide = wide
        self._mark = mark
        self._text_money = text_money
        self._sql: dict[tuple[int, ...], str] = {}

    def sql(self, used: tuple[int, ...]) -> str:
        found = self._sql.get(used)
        if found is None:
            measures = (*rollup.MEASURES, *(BIN_COLUMNS[b] for b in used))
            found = rollup.upsert_sql(self.wide.table, self.wide.keys, measures, self._mark,
                                     text_money=self._text_money)
            self._sql[used] = found
        return found

    def of(self, added: dict[Key, Sums]) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """(SQL, the rows it takes: the key, the measures before the bins, then those bin
        columns' counts), in key order within each, keys with the same bin columns
        together."""
        groups: dict[tuple[int, ...], list[tuple[Any, ...]]] = {}
        for key, (total, counts) in sorted(added.items()):
            used = tuple(sorted(counts))
            if used not in self._sql and len(self._sql) >= SPARSE_SETS:
                used = EVERY_BIN
            groups.setdefault(used, []).append((*key, *total, *(counts.get(b, 0) for b in used)))
        return [(self.sql(used), rows) for used, rows in groups.items()]

