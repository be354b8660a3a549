"""The hourly rollup of the usage ledger: `usage_hourly_nokey` and `usage_hourly_nokey_bins`
(migration 009; they replace migration 003's `usage_hourly` and `usage_hourly_bins`,
which were keyed by `key_id` too and are dropped).

Owns: what ledger rows add to the rollup and the upserts that add it (run on SQLite
behind the ledger, `rollup_behind.py`; Postgres's writer works the same
sums out in SQL in the statement that inserts them, `pg_batch_sql.py`); the SQLite
writer's exact addition of costs, which the daily and all-tenant rollups (`rollup_wide.py`) share; and the list
of rollup migrations with their fills. Which reads it answers is `sources.py`'s.

Rules:
- A rollup row's key is the hour (`YYYY-MM-DDTHH`, UTC: the ledger reads' hour bucket)
  plus every column a ledger read filters or groups on except the key: tenant, project,
  model, provider, deployment, status. A NULL provider or deployment is '' there: the
  reads group NULL as '' already, and a filter value is never empty
  (`server/ledger_params.py`).
- Without `key_id` the rollup has one row per (hour, tenant, project, model, ...) however
  many keys send; a read filtered or grouped by key is not the rollup's (`sources.py`:
  the daily rollup's by day, else the ledger's, through `usage_key_at (key_id, at, id)`).
- `usage_hourly_nokey` sums requests, the five token counts, cost, and the latency and TTFT
  of the rows that have them (sums and counts). Cost is exact and never overflows: on
  Postgres an unbounded NUMERIC added in SQL; on SQLite text with exactly 10 places,
  like the ledger's (read with the same exact integer sum, `ledger.py`), added in Python
  inside the upsert (`MONEY_ADD`, a function the writer's connection registers: SQL on
  SQLite has no exact decimal addition), so each table takes one statement, not a read
  of the row's cost and then a write.
- `usage_hourly_nokey_bins` counts rows per (metric, `core.percentiles` bin), for the
  latency and TTFT percentiles.
- A row is added once: only rows whose INSERT inserted them (a retried `request_id`
  adds nothing). Postgres adds them in the same statement; SQLite in a transaction of
  its own at most `rollup_seconds` later, with a watermark that says which rows the
  rollup holds (`rollup_behind.py`), so the rollup equals the ledger's sums once what
  is kept behind is written (reads in the owning process write it first).
- Rows of one batch with the same key are added up here first: one upsert per key.
- Migration 009 builds the rollup from the rows already in the ledger (the same sums,
  in SQL; a test checks it gives what the writer gives).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Context, Decimal
from typing import Any

from adapters.storage.migrations import migrations
from adapters.storage.records import UsageRecord
from core import percentiles

HOURLY = "usage_hourly_nokey"
BINS = "usage_hourly_nokey_bins"
TABLES = (HOURLY, BINS)  # every rollup table, each with an `hour` column
KEY_COLUMNS = ("hour", "tenant", "project", "model", "provider", "deployment", "status")
MEASURES = (
    "requests", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
    "reasoning_tokens", "cost", "latency_ms_sum", "latency_count", "ttft_ms_sum", "ttft_count",
)  # fmt: skip
METRICS = ("latency_ms", "ttft_ms")
BIN_COLUMNS = (*KEY_COLUMNS, "metric", "bin")

Key = tuple[str, ...]
_PLACES = Decimal("1E-10")
WIDE_CONTEXT = Context(prec=80)  # any sum of ledger costs, exactly


def hour_of(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H")


def _key(rec: UsageRecord) -> Key:
    return (hour_of(rec.at), rec.tenant, rec.project, rec.model,
            rec.provider or "", rec.deployment or "", rec.status)  # fmt: skip


def contributions(
    records: Iterable[UsageRecord],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What `records` add: (`HOURLY` rows, `BINS` rows), one per rollup key,
    as the upserts' arguments (key columns, then the measures, cost a Decimal; or the
    count)."""
    hourly: dict[Key, list[Any]] = {}
    bins: dict[tuple[Any, ...], int] = {}
    for rec in records:
        key = _key(rec)
        latency, ttft = rec.latency_ms, rec.ttft_ms
        adds: list[int | Decimal] = [1, rec.input_tokens, rec.output_tokens, rec.cached_input_tokens,
                rec.cache_write_tokens, rec.reasoning_tokens, rec.cost,
                latency or 0, int(latency is not None), ttft or 0, int(ttft is not None)]  # fmt: skip
        sums = hourly.get(key)
        hourly[key] = adds if sums is None else [WIDE_CONTEXT.add(a, b) if isinstance(a, Decimal)
                                                 else a + b for a, b in zip(sums, adds, strict=True)]  # fmt: skip
        for metric, value in zip(METRICS, (latency, ttft), strict=True):
            if value is not None:
                bin_key = (*key, metric, percentiles.bin_of(value))
                bins[bin_key] = bins.get(bin_key, 0) + 1
    hourly_rows = [(*key, *sums) for key, sums in hourly.items()]
    bin_rows = [(*bin_key, n) for bin_key, n in bins.items()]
    return hourly_rows, bin_rows


def upsert_sql(
    table: str, keys: Sequence[str], measures: Sequence[str], mark: str, *, text_money: bool = False,
    rows: int = 1,
) -> str:
    """Insert, or add the measures to the row of that key (`text_money`: SQLite's cost
    text, added by `MONEY_ADD`); `rows` rows of distinct keys in one statement
    (Postgres upserts them in the order given)."""
    cols = (*keys, *measures)
    adds = ", ".join(
        f"{m} = {MONEY_ADD}({table}.{m}, excluded.{m})" if text_money and m == "cost"
        else f"{m} = {table}.{m} + excluded.{m}"
        for m in measures
    )
    values = ", ".join([f"({', '.join([mark] * len(cols))})"] * rows)
    return (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES {values}"
        f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {adds}"
    )


def upsert_hourly(mark: str, *, text_money: bool, rows: int = 1) -> str:
    return upsert_sql(HOURLY, KEY_COLUMNS, MEASURES, mark, text_money=text_money, rows=rows)


def upsert_bins(mark: str, rows: int = 1) -> str:
    return upsert_sql(BINS, BIN_COLUMNS, ("n",), mark, rows=rows)


def money_text(value: Decimal) -> str:
    """A cost as SQLite keeps it: exactly 10 places, never rounded (`WIDE_CONTEXT`)."""
    return f"{WIDE_CONTEXT.quantize(value, _PLACES):f}"


MONEY_ADD = "umg_money_add"  # the SQL name of `money_add` on SQLite's writer connection


def money_add(held: object, added: object) -> str:
    """`MONEY_ADD(row.cost, excluded.cost)`: the cost a rollup row holds plus what is
    added, exactly, as SQLite keeps it (`money_text`)."""
    return money_text(WIDE_CONTEXT.add(Decimal(str(held)), Decimal(str(added))))


def money_texts(rows: list[tuple[Any, ...]], keys: int = len(KEY_COLUMNS)) -> list[tuple[Any, ...]]:
    """SQLite's rollup rows (`keys` key columns, then `MEASURES`...) with their cost as
    text (`money_text`): the value a new row takes, and what `MONEY_ADD` adds to a row
    that exists."""
    at = keys + MEASURES.index("cost")
    return [(*row[:at], money_text(row[at]), *row[at + 1 :]) for row in rows]


MIGRATION = "_usage_hourly_nokey.sql"  # the migration that creates and fills the rollup
# Every migration that creates and fills a rollup: this one, the daily (011), the
# all-tenant hourly (012) and the hourly by model (014, filled from 012's) rollups of
# `rollup_wide.py`.
MIGRATIONS = (MIGRATION, "_usage_daily.sql", "_usage_hourly_all.sql", "_usage_hourly_model.sql")


def backfill(backend: str, name: str = MIGRATION) -> list[str]:
    """A rollup migration's statements that build its tables from the ledger's rows (for
    a ledger filled behind the writer's back, as `make bench-console` does)."""
    (migration,) = [m for m in migrations(backend) if m.name.endswith(name)]
    return [s for s in migration.statements() if s.startswith("INSERT")]


def backfill_all(backend: str) -> list[str]:
    """Every rollup's fill from the ledger (`MIGRATIONS`), in order."""
    return [s for name in MIGRATIONS for s in backfill(backend, name)]
