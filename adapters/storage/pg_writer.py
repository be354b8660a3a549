"""Postgres's ledger writer: a batch of usage rows and their rollups, one transaction.

Owns: what one group commit (`group_commit.py`) writes on Postgres and how a refused
batch is retried. `insert_usage` returns once the transaction holding its row has
committed (`alone` changes nothing here: a commit always waits for the server).

Rules:
- A batch is ONE statement (`pg_batch_sql.py`): the multi-row `INSERT ... ON CONFLICT DO
  NOTHING RETURNING` of its rows and, in the same statement, each rollup's upsert
  (hourly, daily, all-tenant, by model) worked out by Postgres from exactly the rows it
  inserted, so a row adds to the rollups once. The gateway sends the rows' parameters
  only. Each caller learns whether its own row went in; a later row of the batch with the
  id or `request_id` of an earlier one is not sent and answers False.
- The rollup rows are upserted table by table in one order, each table's rows in
  ascending key order, so the writers of several processes, which share those rows,
  always lock them in the same order and cannot deadlock (`pg_batch_sql.py` says how).
- A batch refused for what a row holds (a value out of range, a constraint:
  `psycopg.DataError`, `IntegrityError`, a rollup's sum beyond BIGINT among them; or a
  Python error making its parameters, `_ROW_REFUSED`) is committed again one row at a
  time, so only that row's caller gets the error, always a psycopg error
  (`RowNotStorable` wraps any other), and the writer keeps running; any other failed commit fails every row of its batch (each caller
  gets the error).
- A batch goes on the writer's own connection, from the Trio thread (`pg_line.py`: no
  worker thread, no pool checkout), rerun as the pool's transactions are after a
  deadlock, and failing as they do (`StorageUnavailable`; the same breaker).
- No state rides along (state is its own transaction on Postgres), so a batch without
  rows, the writer's retry after a failure, has nothing to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from adapters.clock import Clock
from adapters.storage import codec, pg_batch_sql
from adapters.storage.group_commit import GroupCommit, as_driver_error, row_by_row_on_refusal
from adapters.storage.pg_line import CONNECT_TIMEOUT_SECONDS, Line
from adapters.storage.pg_pool import PostgresConnection
from adapters.storage.records import UsageRecord

# A ledger batch refused for the values of a row (not for the database being away or
# busy): what the database answers (DataError, IntegrityError: a value out of range, a
# constraint, a rollup's sum beyond BIGINT), or what making a row's parameters raises
# before anything is sent (a TypeError, ValueError or ArithmeticError). The batch is then
# committed row by row (`_commit`); the writer keeps running.
_ROW_REFUSED = (psycopg.DataError, psycopg.IntegrityError, ArithmeticError, TypeError, ValueError)


class RowNotStorable(psycopg.DataError):
    """A ledger row refused with an error that is not psycopg's (its cause): raised as a
    psycopg error, so callers treat it as any refusal (`PostgresStorage.errors`)."""


def _refusal(err: Exception) -> Exception:
    """A refused row's error as its caller gets it: psycopg's own, or `RowNotStorable`."""
    return as_driver_error(err, psycopg.Error, RowNotStorable)


def _params(rows: Sequence[tuple[Any, ...]]) -> list[Any]:
    """The batch statement's parameters: each row's columns, row after row."""
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
        self._line = Line(url, CONNECT_TIMEOUT_SECONDS)  # the writer's own connection
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
        """The writer's batch: ONE statement (`pg_batch_sql.py`) inserting the rows and
        adding the inserted ones to every rollup, one transaction. (No state rides along,
        so a batch without rows, the writer's retry after a failure, has nothing to do.)"""
        if not rows:
            return []
        firsts = _firsts([rec for _, rec in rows])
        params = _params([row for (row, _), first in zip(rows, firsts, strict=True) if first])

        n = sum(firsts)
        answered = await self._reruns(lambda: self._statement(n, pg_batch_sql.batch(n), params))
        inserted = {r[0] for r in answered}
        return [first and rec.id.encode() in inserted for (_, rec), first in zip(rows, firsts, strict=True)]

    async def _statement(self, key: int, query: bytes, params: list[Any]) -> list[tuple[bytes | None, ...]]:
        """One statement on the writer's own connection (`pg_line.py`), its own
        transaction, failing as the pool's operations do (`pg_pool.py`)."""
        return await self._on_line(lambda: self._line.rows(key, query, params))

    async def _shut(self) -> None:
        self._line.close()
        await super()._shut()
