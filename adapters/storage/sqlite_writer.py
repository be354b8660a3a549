"""SQLite's ledger writer: a batch of usage rows and the dirty state, one commit; the rollups behind.

Owns: what one group commit (`group_commit.py`) writes on SQLite and how a refused batch
is retried: the batch's usage rows (`INSERT ... ON CONFLICT DO NOTHING`) and every state
scope changed in memory since the last batch (`memstate.py`), in one transaction; and
when the rows it inserted are added to the rollups, behind it (`rollup_behind.py`).

Rules:
- `insert_usage` returns once its row is committed, in a batch with the other rows
  queued meanwhile and with all state changed before it. So once a request's row is
  committed, so is the budget it settled before recording; after a crash what can be
  lost is the last `flush_seconds` (0.5 s) of rate-bucket changes and the reservations
  of requests that were still running.
- The rows a batch inserted are kept (`rollup_behind.Behind`, once the batch has
  committed) and added to the hourly, daily and all-tenant rollups in a transaction
  of their own, at most `rollup_seconds` (1 s) later, at once past
  `rollup_behind.BOUND` rows, before a read of the ledger or its rollups
  (`SQLiteStorage._fetch`) or a prune of them, and at close, by `_rollups_behind`, a
  system task; every transaction runs on the one connection, behind its lock, never
  beside a batch. A crash loses none of them: before a storage writes its first row
  (`take_ledger`, at `migrate` for a serving process) it takes the file (`owner.py`)
  and adds what the rollups miss.
- The batch commits on the Trio thread when it can without waiting (`_tx_here`,
  `sqlite_conn.py`); a batch holds at most `HERE_ROWS` rows, so a backlog is several
  such commits, one after the other, not one in a worker thread. A row that comes alone (`insert_usage(alone=True)`: the driver's
  only open run) is that same transaction in its caller's task, when it can be made
  without waiting (`_commit_now`), without the trip to the writer task and back.
- A batch refused for what a row holds (a constraint or trigger, a value that cannot be
  bound: `_ROW_REFUSED`, which includes the OverflowError of an int beyond 64 bits) is
  committed again one row at a time, as on Postgres, so only that row's caller gets the
  error, always an sqlite3 error (`RowNotStorable` wraps any other); the writer keeps
  running. A refused row is never kept for the rollups.
- A batch that fails puts the state it took back as dirty (the next batch commits it);
  a scope whose value cannot be stored as JSON is logged and dropped from memory.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import trio

from adapters.storage import codec, rollup_behind, rollup_wide
from adapters.storage.base import State
from adapters.storage.group_commit import GroupCommit, as_driver_error, row_by_row_on_refusal
from adapters.storage.memstate import StateTable
from adapters.storage.records import UsageRecord
from adapters.storage.sqlite_conn import HERE_ROWS, Conn, SQLiteConnection, _NotNow

log = logging.getLogger("umg.storage")

_USAGE_COLS = ", ".join(codec.columns(UsageRecord))
_INSERT_USAGE = (
    f"INSERT INTO usage ({_USAGE_COLS}) VALUES ({', '.join('?' * len(codec.columns(UsageRecord)))})"
    " ON CONFLICT DO NOTHING"
)
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
    def __init__(self, path: str, *, flush_seconds: float, queue_rows: int, rollup_seconds: float) -> None:
        super().__init__(path)
        self._states = StateTable()
        self._behind = rollup_behind.Behind()  # rows committed, not yet in the rollups
        self.rollup_seconds = rollup_seconds
        self._rollups_due: float | None = None  # when the kept rows must be written by
        self._rollups_retry = -math.inf  # not before then: the last write failed
        self._rollups_wake = trio.Event()
        self._rollups_task = False  # `_rollups_behind` is running
        self._ledger_taken = False  # the rows a crash left above the watermark are added
        self._taking: trio.Event | None = None  # set when `take_ledger` is done or has failed
        # the daily and all-tenant rollups' upserts (their SQL kept per set of bin columns);
        # `()` writes the 009 rollup alone (bench/ledger_writer.py)
        self._wide_upserts: tuple[rollup_wide.SparseUpserts, ...] = tuple(
            rollup_wide.SparseUpserts(wide, "?", text_money=True) for wide in rollup_wide.TABLES
        )
        # batches the Trio thread commits itself when the connection is free (sqlite_conn.py)
        self.writer = GroupCommit(
            self._commit, (sqlite3.Error,), capacity=queue_rows, max_batch=HERE_ROWS,
            flush_seconds=flush_seconds, commit_now=self._commit_now,
        )

    async def insert_usage(self, rec: UsageRecord, *, alone: bool = False) -> bool:
        if not self._ledger_taken:
            await self.take_ledger()
        return await self.writer.submit((codec.sqlite_row(rec), rec), alone=alone)

    def _own_ledger(self) -> None:
        """Take the file for this process before writing its ledger (`SQLiteState`: the
        owner's lock; here nothing)."""

    async def take_ledger(self) -> int:
        """Before this storage writes its first ledger row (at `migrate` of a serving
        process, else at that row): take the file (`_own_ledger`: one process writes
        the ledger and keeps its rollups behind) and add the ledger rows a crash left
        above the watermark to the rollups, one transaction; how many. Once: after that,
        rows above the watermark are this process's (`_behind`)."""
        while not self._ledger_taken:
            if self._taking is not None:  # another task is taking it: wait with the others
                await self._taking.wait()
                continue
            self._taking = taking = trio.Event()
            try:
                self._own_ledger()
                folded = await self._tx_here(lambda c: rollup_behind.fold(c, self._wide_upserts), 0)
                self._ledger_taken = True
            finally:
                self._taking = None
                taking.set()
            if folded:
                log.warning("added %d ledger rows a crash had left out of the rollups", folded)
            return folded
        return 0

    async def flush_rollups(self) -> int:
        """Write the rows kept behind to the rollups now, one transaction (a read of the
        rollups, a prune, close, or `_rollups_behind` when due); how many."""
        if not len(self._behind):
            return 0
        return await self._tx_here(
            lambda c: rollup_behind.write(c, self._behind, self._wide_upserts),
            len(self._behind), self._behind.written,
        )

    def _rollups_kept(self) -> None:
        """After a batch: rows kept are written within `rollup_seconds`, at once past
        `rollup_behind.BOUND` (by `_rollups_behind`, a system task started once)."""
        kept = len(self._behind)
        if not kept:
            return
        if self._rollups_due is None or kept >= rollup_behind.BOUND:
            now = trio.current_time()
            # past the bound at once, unless a write just failed (then when it is tried again)
            soon = max(now, self._rollups_retry)
            self._rollups_due = soon if kept >= rollup_behind.BOUND else now + self.rollup_seconds
            self._rollups_wake.set()
            if not self._rollups_task:
                self._rollups_task = True
                trio.lowlevel.spawn_system_task(self._rollups_behind, name="umg-sqlite-rollups")

    async def _rollups_behind(self) -> None:
        """Write the kept rows when they are due; on a failure, log and try again
        `rollup_seconds` later. Ends when the storage closes (close writes what is left)."""
        while not self._closing:
            self._rollups_wake = trio.Event()
            due = self._rollups_due
            if due is None or trio.current_time() < due:
                with trio.move_on_at(math.inf if due is None else due):
                    await self._rollups_wake.wait()
                continue
            self._rollups_due = None
            try:
                await self.flush_rollups()
            except sqlite3.Error as err:
                log.error("the rollups were not written (%s): tried again in %.1f s", err, self.rollup_seconds)
                self._rollups_due = self._rollups_retry = trio.current_time() + self.rollup_seconds
            except RuntimeError:  # the storage closed meanwhile (close wrote them)
                return
            self._rollups_kept()  # rows kept meanwhile

    async def _rollups_close(self) -> None:
        """At close, once the writer has committed what was queued: write the rows kept
        behind. A failure is logged: the rows are in the ledger, and the next process to
        take the file adds them (`take_ledger`)."""
        self._rollups_wake.set()  # `_rollups_behind` ends
        try:
            await self.flush_rollups()
        except sqlite3.Error as err:
            log.error("the rollups were not written at close (%s): the next start adds them", err)

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
        """The writer's batch: `rows` (each a (row, record) pair) and every changed state
        scope, one transaction; the inserted rows are kept for the rollups."""
        apply, committed, states, unstorable = self._batch(rows)
        try:
            results = await self._tx_here(apply, len(rows), committed)
        except BaseException:
            self._states.mark_dirty([scope for scope, _ in states])
            raise
        self._batch_ended(unstorable)
        return results

    def _commit_now(self, row: tuple[Any, ...]) -> bool | BaseException | None:
        """A lone row's batch committed in the caller's task (`GroupCommit`'s
        `commit_now`): its answer, or None when it would have to wait (nothing done).
        A row refused for what it holds raises its caller's error, as `_commit` does."""
        apply, committed, states, unstorable = self._batch([row])
        try:
            done = self._tx_now(apply, 1, committed)
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
        Callable[[Conn], list[bool]], Callable[[], None],
        list[tuple[str, State | None]], list[tuple[str, Exception]],
    ]:
        """A batch's transaction (`apply`), what keeps its inserted rows for the rollups
        once it has committed (`committed`), the dirty state it takes, and where it
        lists the scopes it could not store."""
        states = self._states.take_dirty()
        unstorable: list[tuple[str, Exception]] = []
        new: list[UsageRecord] = []  # the rows inserted, for the rollups
        last = [0]  # the rowid of the last of them

        def apply(c: Conn) -> list[bool]:
            inserted = []
            for row, rec in rows:
                cur = c.execute(_INSERT_USAGE, row)
                inserted.append(cur.rowcount == 1)
                if inserted[-1]:
                    new.append(rec)
                    last[0] = cur.lastrowid or 0
            for scope, value in states:
                try:
                    text = codec.dumps(value)
                except (TypeError, ValueError) as err:  # a caller's bug: reported below
                    unstorable.append((scope, err))
                    continue
                c.execute(UPSERT_STATE, (scope, text))
            return inserted

        def committed() -> None:
            self._behind.keep(new, last[0])

        return apply, committed, states, unstorable

    def _batch_ended(self, unstorable: list[tuple[str, Exception]]) -> None:
        self._rollups_kept()
        for scope, err in unstorable:
            log.error("state %r cannot be stored as JSON (%s): its change is discarded", scope, err)
            self._states.drop(scope)
        self._states.evict()
