"""SQLite's ledger writer: a batch of usage rows, their rollups and the dirty state, one commit.

Owns: what one group commit (`group_commit.py`) writes on SQLite and how a refused batch
is retried: the batch's usage rows (`INSERT ... ON CONFLICT DO NOTHING`), what the
inserted ones add to the hourly, daily and all-tenant rollups, and every state scope
changed in memory since the last batch (`memstate.py`), in one transaction.

Rules:
- `insert_usage` returns once its row is committed, in a batch with the other rows
  queued meanwhile and with all state changed before it. So once a request's row is
  committed, so is the budget it settled before recording; after a crash what can be
  lost is the last `flush_seconds` (0.5 s) of rate-bucket changes and the reservations
  of requests that were still running.
- The batch commits on the Trio thread when it can without waiting (`_tx_here`,
  `sqlite_conn.py`). A row that comes alone (`insert_usage(alone=True)`: the driver's
  only open run) is that same transaction in its caller's task, when it can be made
  without waiting (`_commit_now`), without the trip to the writer task and back.
- A batch refused for what a row holds (a constraint or trigger, a value that cannot be
  bound or added up: `_ROW_REFUSED`, which includes the OverflowError of an int beyond
  64 bits) is committed again one row at a time, as on Postgres, so only that row's
  caller gets the error, always an sqlite3 error (`RowNotStorable` wraps any other);
  the writer keeps running.
- A batch that fails puts the state it took back as dirty (the next batch commits it);
  a scope whose value cannot be stored as JSON is logged and dropped from memory.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from adapters.storage import codec, rollup, rollup_wide
from adapters.storage.base import State
from adapters.storage.group_commit import GroupCommit, as_driver_error, row_by_row_on_refusal
from adapters.storage.memstate import StateTable
from adapters.storage.records import UsageRecord
from adapters.storage.sqlite_conn import Conn, SQLiteConnection, _NotNow

log = logging.getLogger("umg.storage")

_USAGE_COLS = ", ".join(codec.columns(UsageRecord))
_INSERT_USAGE = (
    f"INSERT INTO usage ({_USAGE_COLS}) VALUES ({', '.join('?' * len(codec.columns(UsageRecord)))})"
    " ON CONFLICT DO NOTHING"
)
_UPSERT_HOURLY = rollup.upsert_hourly("?", text_money=True)
_UPSERT_BINS = rollup.upsert_bins("?")
UPSERT_STATE = (
    "INSERT INTO state (scope, data) VALUES (?, ?)"
    " ON CONFLICT (scope) DO UPDATE SET data = excluded.data"
)

# What a ledger batch is refused for by one row's values, not by the database being
# unusable: a constraint or a trigger (IntegrityError), a value SQLite cannot bind or
# hold (DataError, InterfaceError, ProgrammingError; an int beyond 64 bits fails to bind
# with an OverflowError, not an sqlite3 error), a value the rollups cannot add (a
# TypeError, ValueError or ArithmeticError raised on that row's values). The batch is
# then committed row by row (`SQLiteWriter._commit`).
_ROW_REFUSED = (
    sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
    ArithmeticError, TypeError, ValueError,
)


class RowNotStorable(sqlite3.DataError):
    """A ledger row refused with an error that is not sqlite3's (its cause): raised as
    an sqlite3 error, so callers treat it as any refusal (`SQLiteStorage.errors`)."""


def _refusal(err: Exception) -> Exception:
    """`err` as the refused row's caller gets it: always an sqlite3 error."""
    return as_driver_error(err, sqlite3.Error, RowNotStorable)


class SQLiteWriter(SQLiteConnection):
    def __init__(self, path: str, *, flush_seconds: float, queue_rows: int) -> None:
        super().__init__(path)
        self._states = StateTable()
        # the daily and all-tenant rollups' upserts (their SQL kept per set of bin columns);
        # `()` writes the 009 rollup alone (bench/ledger_writer.py)
        self._wide_upserts: tuple[rollup_wide.SparseUpserts, ...] = tuple(
            rollup_wide.SparseUpserts(wide, "?", text_money=True) for wide in rollup_wide.TABLES
        )
        self.writer = GroupCommit(
            self._commit, (sqlite3.Error,), capacity=queue_rows, flush_seconds=flush_seconds,
            commit_now=self._commit_now,
        )

    async def insert_usage(self, rec: UsageRecord, *, alone: bool = False) -> bool:
        return await self.writer.submit((codec.sqlite_row(rec), rec), alone=alone)

    async def _commit(self, rows: Sequence[tuple[Any, ...]]) -> list[bool | BaseException]:
        """The writer's commit: the batch in one transaction (`_commit_batch`). When it is
        refused for what a row holds (`_ROW_REFUSED`), each row is committed alone, so only
        the refused row's caller gets the error (an sqlite3 error: `_refusal`); the others
        are committed and answered. Any other failure fails the whole batch."""
        return await row_by_row_on_refusal(self._commit_batch, rows, _ROW_REFUSED, self._refused_row, "sqlite")

    def _refused_row(self, err: Exception) -> Exception:
        """A row refused alone, as its caller gets it (`_refusal`); the state its rolled-back
        transaction took back is committed soon (`poke`)."""
        self.writer.poke()
        return _refusal(err)

    async def _commit_batch(self, rows: Sequence[tuple[Any, ...]]) -> list[bool]:
        """The writer's batch: `rows` (each a (row, record) pair), what the inserted ones
        add to the hourly, daily and all-tenant rollups, and every changed state scope,
        one transaction."""
        apply, states, unstorable = self._batch(rows)
        try:
            results = await self._tx_here(apply, len(rows))
        except BaseException:
            self._states.mark_dirty([scope for scope, _ in states])
            raise
        self._batch_ended(unstorable)
        return results

    def _commit_now(self, row: tuple[Any, ...]) -> bool | BaseException | None:
        """A lone row's batch committed in the caller's task (`GroupCommit`'s
        `commit_now`): its answer, or None when it would have to wait (nothing done).
        A row refused for what it holds raises its caller's error, as `_commit` does."""
        apply, states, unstorable = self._batch([row])
        try:
            done = self._tx_now(apply, 1)
        except BaseException as err:
            self._states.mark_dirty([scope for scope, _ in states])
            if isinstance(err, _ROW_REFUSED):
                raise self._refused_row(err)  # noqa: B904  (the same error, or one whose cause is set)
            raise
        if isinstance(done, _NotNow):
            self._states.mark_dirty([scope for scope, _ in states])
            return None
        self._batch_ended(unstorable)
        return done[0]

    def _batch(self, rows: Sequence[tuple[Any, ...]]) -> tuple[
        Callable[[Conn], list[bool]], list[tuple[str, State | None]], list[tuple[str, Exception]]
    ]:
        """A batch's transaction (`apply`), the dirty state it takes, and where it lists
        the scopes it could not store."""
        states = self._states.take_dirty()
        unstorable: list[tuple[str, Exception]] = []

        def apply(c: Conn) -> list[bool]:
            inserted = [c.execute(_INSERT_USAGE, row).rowcount == 1 for row, _ in rows]
            new = [rec for (_, rec), added in zip(rows, inserted, strict=True) if added]
            hourly, bins = rollup.contributions(new)
            # one statement per rollup table: a row's cost is added in the upsert (MONEY_ADD)
            c.executemany(_UPSERT_HOURLY, rollup.money_texts(hourly))
            c.executemany(_UPSERT_BINS, bins)
            wide_sums = rollup_wide.sums(new) if new else {}
            for upserts in self._wide_upserts if new else ():
                wide = upserts.wide
                for sql, adds in upserts.of(wide_sums[wide]):
                    c.executemany(sql, rollup.money_texts(adds, len(wide.keys)))
            for scope, value in states:
                try:
                    text = codec.dumps(value)
                except (TypeError, ValueError) as err:  # a caller's bug: reported below
                    unstorable.append((scope, err))
                    continue
                c.execute(UPSERT_STATE, (scope, text))
            return inserted

        return apply, states, unstorable

    def _batch_ended(self, unstorable: list[tuple[str, Exception]]) -> None:
        for scope, err in unstorable:
            log.error("state %r cannot be stored as JSON (%s): its change is discarded", scope, err)
            self._states.drop(scope)
        self._states.evict()
