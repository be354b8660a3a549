"""Postgres's ledger writer: a batch of usage rows and their rollups, one transaction.

Owns: what one group commit (`group_commit.py`) writes on Postgres and how a refused
batch is retried. `insert_usage` returns once the transaction holding its row has
committed (`alone` changes nothing here: a commit always waits for the server).

Rules:
- A batch is ONE multi-row `INSERT ... ON CONFLICT DO NOTHING RETURNING id` (so each
  caller learns whether its own row went in; a later row of the batch with the id or
  `request_id` of an earlier one is not sent and answers False) plus the rollup upserts
  of the inserted rows (hourly, daily, all-tenant), in one transaction.
- The rollup rows are upserted table by table in one order, each table's rows (one per
  key, added up first) as ONE multi-row upsert in sorted key order, so the writers of
  several processes, which share those rows, always lock them in the same order and
  cannot deadlock. The wide tables' upserts name only the bin columns the batch adds
  to. The upserts go out together in one pipeline (one round trip for all of them,
  their errors raised as if each had been sent alone).
- A batch refused for what a row holds (a value out of range, a constraint:
  `psycopg.DataError`, `IntegrityError`; or a value the rollups cannot add,
  `_ROW_REFUSED`) is committed again one row at a time, so only that row's caller gets
  the error, always a psycopg error (`RowNotStorable` wraps any other), and the writer
  keeps running; any other failed commit fails every row of its batch (each caller
  gets the error).
- No state rides along (state is its own transaction on Postgres), so a batch without
  rows, the writer's retry after a failure, has nothing to do.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import psycopg

from adapters.clock import Clock
from adapters.storage import codec, rollup, rollup_wide
from adapters.storage.group_commit import GroupCommit, as_driver_error, row_by_row_on_refusal
from adapters.storage.pg_pool import Conn, PostgresConnection
from adapters.storage.records import UsageRecord

_USAGE_COLS = ", ".join(codec.columns(UsageRecord))

# A ledger batch refused for the values of a row (not for the database being away or
# busy): what the database answers (DataError, IntegrityError), or what adding a row's
# values to the rollups raises before anything is sent (a TypeError, ValueError or
# ArithmeticError). The batch is then committed row by row (`_commit`); the writer keeps
# running.
_ROW_REFUSED = (psycopg.DataError, psycopg.IntegrityError, ArithmeticError, TypeError, ValueError)


class RowNotStorable(psycopg.DataError):
    """A ledger row refused with an error that is not psycopg's (its cause): raised as a
    psycopg error, so callers treat it as any refusal (`PostgresStorage.errors`)."""


def _refusal(err: Exception) -> Exception:
    """A refused row's error as its caller gets it: psycopg's own, or `RowNotStorable`."""
    return as_driver_error(err, psycopg.Error, RowNotStorable)


def marks(cols: tuple[str, ...]) -> str:
    """Placeholders for a row of `cols` (JSON columns cast to jsonb)."""
    return ", ".join("%s::jsonb" if c in codec.JSON_FIELDS else "%s" for c in cols)


_USAGE_MARKS = f"({marks(codec.columns(UsageRecord))})"


def _insert_usage(n: int) -> str:
    """`n` ledger rows in one statement; RETURNING the ids of those it inserted."""
    values = ", ".join([_USAGE_MARKS] * n)
    return f"INSERT INTO usage ({_USAGE_COLS}) VALUES {values} ON CONFLICT DO NOTHING RETURNING id"


@functools.lru_cache(maxsize=64)
def _upsert_hourly(n: int) -> str:
    return rollup.upsert_hourly("%s", text_money=False, rows=n)


@functools.lru_cache(maxsize=64)
def _upsert_bins(n: int) -> str:
    return rollup.upsert_bins("%s", rows=n)


@functools.lru_cache(maxsize=64)
def _upsert_wide(wide: rollup_wide.Wide, used: tuple[int, ...], n: int) -> str:
    """`n` rows of distinct keys in one upsert of `wide`, naming only the bin columns
    `used` (the others keep their DEFAULT 0, or their value): a ledger row adds to at
    most two of the 70, and the statement naming all of them is 7 KB of SQL that psycopg
    parses again on every call (too long for its cache), with 89 parameters a row."""
    measures = (*rollup.MEASURES, *(rollup_wide.BIN_COLUMNS[b] for b in used))
    return rollup.upsert_sql(wide.table, wide.keys, measures, "%s", rows=n)


def _flat(rows: Sequence[tuple[Any, ...]]) -> list[Any]:
    return [value for row in rows for value in row]


def _firsts(records: Sequence[UsageRecord]) -> list[bool]:
    """Which records of a batch are the first with their id and request_id: a later one
    with either is not inserted (as its own INSERT after the first would not be)."""
    ids: set[str] = set()
    requests: set[str] = set()
    out = []
    for rec in records:
        out.append(rec.id not in ids and rec.request_id not in requests)
        ids.add(rec.id)
        requests.add(rec.request_id)
    return out


class PostgresWriter(PostgresConnection):
    def __init__(
        self, url: str, *, pool_size: int, pool_timeout: float, clock: Clock | None,
        queue_rows: int,
    ) -> None:
        super().__init__(url, pool_size=pool_size, pool_timeout=pool_timeout, clock=clock)
        # a batch is one INSERT of 25 parameters a row: 512 rows stay far below the
        # protocol's 65,535 parameters a statement
        self.writer = GroupCommit(self._commit, self.errors, capacity=queue_rows, max_batch=512)

    async def insert_usage(self, rec: UsageRecord, *, alone: bool = False) -> bool:
        """Queued for the writer (`group_commit.py`); returns once its batch committed.
        (`alone` changes nothing here: a commit always waits for the server.)"""
        return await self.writer.submit((codec.postgres_row(rec), rec))

    async def _commit(self, rows: Sequence[tuple[Any, ...]]) -> list[bool | BaseException]:
        """The writer's commit: the batch in one transaction (`_commit_batch`). When the
        database refuses the batch for what a row holds (`_ROW_REFUSED`: a value out of
        range, a constraint), each row is committed alone, the same way, so only the
        refused row's caller gets the error; the others are committed and answered.
        Any other failure (the database away, contention after the reruns) fails the
        whole batch: each caller gets it."""
        return await row_by_row_on_refusal(self._commit_batch, rows, _ROW_REFUSED, _refusal, "postgres")

    async def _commit_batch(self, rows: Sequence[tuple[Any, ...]]) -> list[bool]:
        """The writer's batch: the rows in ONE multi-row INSERT, what the inserted ones add
        to the rollups (`rollup.py`, `rollup_wide.py`), one transaction. (No state rides along, so a
        batch without rows, the writer's retry after a failure, has nothing to do.)"""
        if not rows:
            return []
        firsts = _firsts([rec for _, rec in rows])
        fresh = [row for (row, _), first in zip(rows, firsts, strict=True) if first]

        def apply(c: Conn) -> list[bool]:
            inserted = {r[0] for r in c.execute(_insert_usage(len(fresh)), _flat(fresh)).fetchall()}
            added = [first and rec.id in inserted for (_, rec), first in zip(rows, firsts, strict=True)]
            new = [rec for (_, rec), is_new in zip(rows, added, strict=True) if is_new]
            hourly, bins = rollup.contributions(new)
            # Sorted, table after table in one order: every writer locks rollup rows in
            # the same order, so two processes' batches cannot deadlock. Each table's
            # rows (one per key) are ONE multi-row upsert, which Postgres applies in the
            # order given: one round trip per table, not one per row.
            wide_sums = rollup_wide.sums(new)
            with c.pipeline():  # the upserts sent together, their answers read once
                for sql, adds in ((_upsert_hourly(len(hourly)), sorted(hourly)),
                                  (_upsert_bins(len(bins)), sorted(bins))):
                    if adds:
                        c.execute(sql, _flat(adds))
                for wide in rollup_wide.TABLES:
                    used, adds = rollup_wide.union_rows(wide_sums[wide])  # in key order
                    if adds:
                        c.execute(_upsert_wide(wide, used, len(adds)), _flat(adds))
            return added

        return await self._run(apply)
