"""Postgres's ledger batch as ONE statement: the rows' INSERT and every rollup's upsert.

Owns: the SQL text `pg_writer.py` sends for a batch of `n` ledger rows. The gateway sends
only the rows' parameters; Postgres works out what the inserted rows add to each rollup
(`rollup.py`'s hourly tables, `rollup_wide.py`'s wide ones), with the same sums as the
rollup migrations' fills (a test checks the writer against them).

Rules:
- One data-modifying CTE: `ins` is the multi-row `INSERT ... ON CONFLICT DO NOTHING
  RETURNING` the inserted rows (a conflicting row returns nothing, so it adds nothing);
  each rollup's upsert groups exactly those rows by its key. The statement answers the
  ids of the rows it inserted.
- Lock order as before: the ledger rows first, then the tables in one order (`TABLES`:
  hourly, bins, then `rollup_wide.TABLES`), each table's rows in ascending key order by
  code point (`COLLATE "C"`: Python's `sorted`, which the writer used before), so the
  writers of several processes, which share rollup rows, cannot deadlock. Postgres runs
  a CTE's data-modifying parts in no promised order, so each upsert's source is gated on
  the count of the one before (an uncorrelated subquery, run to its end before the
  upsert takes its first row), and the answer is gated on the last.
- Money is NUMERIC added by Postgres (exact, unbounded); a NULL provider or deployment is
  '' in the keys; a bin is `width_bucket` over `core.percentiles.BOUNDS_MS` (the number of
  bounds at or below the value: `percentiles.bin_of`).
- The text depends on `n` only (`pg_line.py` prepares each size once per connection).
  Its placeholders are Postgres's own (`$1`, `$2`, ...), as bytes, sent as they are.
  (Through psycopg's `%s`, all 32 KB of the text were rescanned for placeholders on
  every call, a statement this long being past its cache: 0.06 to 0.4 ms a batch.)
"""

from __future__ import annotations

import functools

from adapters.storage import codec, rollup, rollup_wide
from adapters.storage.records import UsageRecord
from core import percentiles

_COLS = codec.columns(UsageRecord)
_BOUNDS = "ARRAY[" + ", ".join(str(b) for b in percentiles.BOUNDS_MS) + "]::bigint[]"


def marks(cols: tuple[str, ...]) -> str:
    """Placeholders for a row of `cols` (JSON columns cast to jsonb)."""
    return ", ".join("%s::jsonb" if c in codec.JSON_FIELDS else "%s" for c in cols)


def _native(first: int) -> str:
    """One row's placeholders `($first, ...)` in Postgres's own numbering (JSON columns
    cast to jsonb)."""
    return "(" + ", ".join(f"${first + i}::jsonb" if c in codec.JSON_FIELDS else f"${first + i}"
                           for i, c in enumerate(_COLS)) + ")"  # fmt: skip


_TOKENS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens")
# the measures of `rollup.MEASURES`, in order, as aggregates over the inserted rows
_SUMS = ("count(*)", *(f"sum({t})" for t in _TOKENS), "sum(cost)",
         "coalesce(sum(latency_ms), 0)", "count(latency_ms)",
         "coalesce(sum(ttft_ms), 0)", "count(ttft_ms)")  # fmt: skip
assert len(_SUMS) == len(rollup.MEASURES)

# The inserted rows as the rollups key and bin them.
_ROWS = (
    "added AS (SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24') AS hour,"
    " to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, tenant, project, key_id, model,"
    " coalesce(provider, '') AS provider, coalesce(deployment, '') AS deployment, status,"
    f" {', '.join(_TOKENS)}, cost, latency_ms, ttft_ms,"
    f" width_bucket(latency_ms, {_BOUNDS}) AS latency_ms_bin, width_bucket(ttft_ms, {_BOUNDS}) AS ttft_ms_bin"
    " FROM ins)"
)


def _upsert(name: str, table: str, keys: tuple[str, ...], measures: tuple[str, ...],
            values: tuple[str, ...], source: str, gate: str | None) -> str:
    """`name AS (INSERT INTO table ... SELECT keys, values FROM source GROUP BY keys
    ORDER BY keys ON CONFLICT DO UPDATE adding the measures)`, gated on `gate`'s count."""
    groups = ", ".join(str(i + 1) for i in range(len(keys)))
    order = ", ".join(k if k == "bin" else f'{k} COLLATE "C"' for k in keys)  # bin: the one integer
    where = "" if gate is None else f" WHERE (SELECT count(*) FROM {gate}) >= 0"
    adds = ", ".join(f"{m} = t.{m} + excluded.{m}" for m in measures)
    return (
        f"{name} AS (INSERT INTO {table} AS t ({', '.join((*keys, *measures))})"
        f" SELECT {', '.join((*keys, *values))} FROM {source}{where}"
        f" GROUP BY {groups} ORDER BY {order}"
        f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {adds} RETURNING 1)"
    )


def _bins_source() -> str:
    """The inserted rows' (key, metric, bin), one per metric a row has."""
    keys = ", ".join(rollup.KEY_COLUMNS)
    return (
        f"(SELECT {keys}, 'latency_ms' AS metric, latency_ms_bin AS bin FROM added WHERE latency_ms IS NOT NULL"
        f" UNION ALL SELECT {keys}, 'ttft_ms', ttft_ms_bin FROM added WHERE ttft_ms IS NOT NULL) AS b"
    )


def _wide_bins() -> tuple[str, ...]:
    """Each bin column's count over the inserted rows (`rollup_wide.BIN_COLUMNS`' order)."""
    return tuple(f"count(*) FILTER (WHERE {metric}_bin = {i})"
                 for metric in rollup.METRICS for i in range(percentiles.BINS))  # fmt: skip


TABLES = (rollup.HOURLY, rollup.BINS, *(w.table for w in rollup_wide.TABLES))  # the upserts' order


def _rollups() -> list[str]:
    parts = [
        _upsert("up0", rollup.HOURLY, rollup.KEY_COLUMNS, rollup.MEASURES, _SUMS, "added", None),
        _upsert("up1", rollup.BINS, rollup.BIN_COLUMNS, ("n",), ("count(*)",), _bins_source(), "up0"),
    ]
    for i, wide in enumerate(rollup_wide.TABLES, start=2):
        parts.append(_upsert(f"up{i}", wide.table, wide.keys, rollup_wide.MEASURES,
                             (*_SUMS, *_wide_bins()), "added", f"up{i - 1}"))  # fmt: skip
    return parts


@functools.cache
def _suffix() -> str:
    parts = [_ROWS, *_rollups()]
    return ", ".join(parts) + f" SELECT id FROM ins WHERE (SELECT count(*) FROM up{len(TABLES) - 1}) >= 0"


@functools.lru_cache(maxsize=64)
def batch(n: int) -> bytes:
    """The statement for `n` ledger rows (`codec.postgres_row`'s parameters, row after
    row, as `$1` to `$(25 n)`): answers the ids of the rows it inserted."""
    values = ", ".join(_native(1 + i * len(_COLS)) for i in range(n))
    returned = ", ".join(("id", "at", "tenant", "project", "key_id", "model", "provider", "deployment",
                          "status", *_TOKENS, "cost", "latency_ms", "ttft_ms"))  # fmt: skip
    return (
        f"WITH ins AS (INSERT INTO usage ({', '.join(_COLS)}) VALUES {values}"
        f" ON CONFLICT DO NOTHING RETURNING {returned}), {_suffix()}"
    ).encode()
