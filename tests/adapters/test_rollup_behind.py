"""SQLite's rollups written behind the ledger (adapters/storage/rollup_behind.py).

- A crash between the ledger's commit and the rollups' write loses nothing and counts
  nothing twice: the storage that opens the file next adds the rows above the watermark
  before serving, and the rollups are then exactly what the migrations' fills make of
  the ledger (Hypothesis: random batches, retried request ids, writes of the rollups,
  clean closes, crashes, prunes).
- The rows kept are written within `rollup_seconds`, at once past `BOUND`, and before a
  read; another connection sees them then. Migration 016 starts the watermark at the
  ledger's last rowid; a prune of the ledger lowers it to what is left.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.storage import rollup, rollup_behind
from adapters.storage.ledger import LedgerFilter
from adapters.storage.migrations import migrations
from adapters.storage.records import UsageRecord
from adapters.storage.sqlite import SQLiteStorage
from core.retention import Cutoffs
from tests.adapters.test_storage import make_usage
from tests.adapters.test_usage_rollup import ORDERS, Row, record, rows_strategy

T0 = datetime(2030, 1, 1, tzinfo=UTC)
ROLLUP_TABLES = tuple(ORDERS)


async def opened(path: Path, **options: Any) -> SQLiteStorage:
    storage = SQLiteStorage(str(path), owner=True, **options)
    await storage.migrate()
    return storage


async def crash(storage: SQLiteStorage) -> None:
    """The process dies after its rows are committed, before the rollups are written:
    the queue is committed (as `insert_usage` has answered), the rows kept behind are
    dropped with the process's memory."""
    await storage.writer.close()
    storage._closing = True
    await storage._disconnect()
    storage._disown()


def _tables(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {t: conn.execute(f"SELECT * FROM {t} ORDER BY {', '.join(k)}").fetchall() for t, k in ORDERS.items()}


def written_and_rebuilt(path: Path) -> tuple[dict[str, list[Any]], dict[str, list[Any]], int]:
    """The rollup tables as the file holds them, as every rollup migration's fill makes
    them of the ledger's rows (in a transaction rolled back), and the watermark."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        written = _tables(conn)
        (done,) = conn.execute(rollup_behind.WATERMARK).fetchone()
        conn.execute("BEGIN")
        for table in ROLLUP_TABLES:
            conn.execute(f"DELETE FROM {table}")
        for statement in rollup.backfill_all("sqlite"):
            conn.execute(statement)
        rebuilt = _tables(conn)
        conn.execute("ROLLBACK")
    finally:
        conn.close()
    return written, rebuilt, done


def max_rowid(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT coalesce(max(rowid), 0) FROM usage").fetchone()[0])


def rows(base: datetime, n: int) -> list[UsageRecord]:
    return [make_usage(i, base + timedelta(minutes=17 * i), model=f"m{i % 3}", latency_ms=10 + 37 * i,
                       request_id=f"req_{base:%d%H}_{i}", id=f"use_{base:%d%H}_{i}") for i in range(n)]  # fmt: skip


async def insert_together(storage: SQLiteStorage, recs: list[UsageRecord]) -> None:
    async with trio.open_nursery() as nursery:
        for rec in recs:
            nursery.start_soon(storage.insert_usage, rec)


async def test_a_crash_before_the_rollups_are_written_is_folded_in_at_the_next_start(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    storage = await opened(db, rollup_seconds=60.0)
    await insert_together(storage, rows(T0, 40))
    assert await storage.flush_rollups() == 40
    await insert_together(storage, rows(T0 + timedelta(hours=5), 25))
    assert await storage.insert_usage(rows(T0, 1)[0]) is False  # a retry adds nothing
    assert len(storage._behind) == 25
    await crash(storage)
    written, rebuilt, done = written_and_rebuilt(db)
    assert written != rebuilt  # the last 25 rows are in the ledger only
    assert done == 40 and max_rowid(db) == 65

    storage = await opened(db, rollup_seconds=60.0)  # migrate adds them before serving
    try:
        written, rebuilt, done = written_and_rebuilt(db)
        assert written == rebuilt and done == 65
        assert await storage.take_ledger() == 0  # once
        assert await storage.usage_count() == 65
    finally:
        await storage.close()
    written, rebuilt, done = written_and_rebuilt(db)
    assert written == rebuilt and done == 65


async def test_a_storage_not_opened_to_serve_folds_before_its_first_row(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    storage = await opened(db, rollup_seconds=60.0)
    await insert_together(storage, rows(T0, 10))
    await crash(storage)
    reader = SQLiteStorage(str(db))  # a CLI: reads, never folds
    await reader.migrate()
    try:
        assert written_and_rebuilt(db)[2] == 0
        assert await reader.usage_count() == 10
        assert await reader.insert_usage(rows(T0 + timedelta(hours=1), 11)[10])  # takes the file
        await reader.flush_rollups()
        written, rebuilt, done = written_and_rebuilt(db)
        assert written == rebuilt and done == 11
    finally:
        await reader.close()


async def test_kept_rows_are_written_within_rollup_seconds_and_at_once_past_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "g.db"
    storage = await opened(db, rollup_seconds=0.05)
    try:
        await insert_together(storage, rows(T0, 5))
        assert written_and_rebuilt(db)[2] == 0  # behind
        await trio.sleep(0.3)
        written, rebuilt, done = written_and_rebuilt(db)
        assert written == rebuilt and done == 5 and not storage._behind.records
    finally:
        await storage.close()
    monkeypatch.setattr(rollup_behind, "BOUND", 8)
    storage = await opened(db, rollup_seconds=600.0)
    try:
        for rec in rows(T0 + timedelta(days=1), 7):
            await storage.insert_usage(rec)
        await trio.testing.wait_all_tasks_blocked()
        assert len(storage._behind) == 7
        await storage.insert_usage(rows(T0 + timedelta(days=2), 1)[0])
        with trio.fail_after(5):
            while storage._behind.records:
                await trio.sleep(0.01)
        written, rebuilt, done = written_and_rebuilt(db)
        assert written == rebuilt and done == 13
    finally:
        await storage.close()


async def test_a_write_of_the_rollups_that_fails_is_logged_and_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "g.db"
    storage = await opened(db, rollup_seconds=0.05)
    real = rollup_behind.write
    failures = [sqlite3.OperationalError("disk I/O error")]

    def write(c: Any, behind: rollup_behind.Behind, wide: Any) -> int:
        if failures:
            raise failures.pop()
        return real(c, behind, wide)

    monkeypatch.setattr(rollup_behind, "write", write)
    try:
        await insert_together(storage, rows(T0, 6))
        with trio.fail_after(5):
            while storage._behind.records:
                await trio.sleep(0.01)
        assert any("the rollups were not written" in r.getMessage() for r in caplog.records)
        assert not failures
        written, rebuilt, done = written_and_rebuilt(db)
        assert written == rebuilt and done == 6
        assert await storage.usage_count() == 6
    finally:
        await storage.close()


async def test_rows_past_the_cap_while_writes_fail_are_let_go_and_read_back_from_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "g.db"
    monkeypatch.setattr(rollup_behind, "CAP", 4)
    storage = await opened(db, rollup_seconds=600.0)
    try:
        await insert_together(storage, rows(T0, 3))
        assert len(storage._behind.records) == 3 and not storage._behind.in_ledger
        await insert_together(storage, rows(T0 + timedelta(days=1), 3))
        # past the cap: nothing held in memory, the fact kept
        assert storage._behind.records == [] and storage._behind.in_ledger
        await storage.insert_usage(rows(T0 + timedelta(days=2), 1)[0])
        assert storage._behind.records == []
        assert written_and_rebuilt(db)[2] == 0
        assert await storage.flush_rollups() == 7  # read back from the ledger, above the watermark
        written, rebuilt, done = written_and_rebuilt(db)
        assert written == rebuilt and done == 7 and not storage._behind.in_ledger
        await insert_together(storage, rows(T0 + timedelta(days=3), 2))
        assert len(storage._behind.records) == 2  # held again, below the cap
    finally:
        await storage.close()
    written, rebuilt, done = written_and_rebuilt(db)
    assert written == rebuilt and done == 9


async def test_a_read_writes_what_is_kept_first(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    storage = await opened(db, rollup_seconds=600.0)
    try:
        await insert_together(storage, rows(T0, 30))
        assert written_and_rebuilt(db)[2] == 0
        await storage.usage_totals(LedgerFilter(start=T0, end=T0 + timedelta(days=2)), ())
        written, rebuilt, done = written_and_rebuilt(db)
        assert written == rebuilt and done == 30
    finally:
        await storage.close()


async def test_migration_016_starts_the_watermark_at_the_ledgers_last_row(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    storage = await opened(db)
    for rec in rows(T0, 12):
        await storage.insert_usage(rec)
    await storage.close()
    (m016,) = [m for m in migrations("sqlite") if m.version == 16]
    with sqlite3.connect(db, isolation_level=None) as conn:  # the file as a gateway before 016 left it
        conn.execute("DROP TABLE rollup_watermark")
        conn.execute("DELETE FROM schema_version WHERE version = 16")
    storage = await opened(db)
    try:
        assert await storage._run(lambda c: c.execute(rollup_behind.WATERMARK).fetchone()) == (12,)
        written, rebuilt, _ = written_and_rebuilt(db)
        assert written == rebuilt  # nothing folded twice
        assert m016.name.endswith("_rollup_watermark.sql")
    finally:
        await storage.close()


def _cut(day: datetime) -> Cutoffs:
    at = day.timestamp()
    return Cutoffs(now=at, ledger=at, jobs=None, outbox=None, idempotency_expired=0.0,
                   idempotency_lapsed=0.0, streams=0.0, budget_periods=None)  # fmt: skip


async def test_a_prune_of_the_whole_ledger_lowers_the_watermark_so_new_rows_are_folded(tmp_path: Path) -> None:
    """SQLite gives a new row max(rowid) + 1: once every row is pruned, rowids start
    again at 1, below the old watermark, unless the prune lowered it."""
    db = tmp_path / "g.db"
    storage = await opened(db, rollup_seconds=600.0)
    await insert_together(storage, rows(T0, 20))  # kept behind, written by the prune first
    assert await storage.prune("ledger", _cut(T0 + timedelta(days=3)), 1000) == 20
    assert await storage.prune("rollup", _cut(T0 + timedelta(days=3)), 1000) > 0
    written, rebuilt, done = written_and_rebuilt(db)
    assert written == rebuilt and all(not v for v in written.values()) and done == 0
    await insert_together(storage, rows(T0 + timedelta(days=4), 6))
    await crash(storage)
    assert max_rowid(db) == 6
    storage = await opened(db)
    try:
        written, rebuilt, done = written_and_rebuilt(db)
        assert written == rebuilt and sum(r[len(rollup.KEY_COLUMNS)] for r in written[rollup.HOURLY]) == 6
    finally:
        await storage.close()


async def test_rows_renumbered_below_the_watermark_lower_it_at_the_next_start(tmp_path: Path) -> None:
    """A `VACUUM` may give a table without an INTEGER PRIMARY KEY new rowids (here: the
    first 10 rows gone, the rest moved down by 10, as a compacting copy would): the
    next start lowers the watermark to the last row, so the rows after it are above."""
    db = tmp_path / "g.db"
    storage = await opened(db)
    await insert_together(storage, rows(T0, 30))
    await storage.close()
    with sqlite3.connect(db, isolation_level=None) as conn:
        conn.execute("DELETE FROM usage WHERE rowid <= 10")
        conn.execute("UPDATE usage SET rowid = rowid - 10")
        for table in ROLLUP_TABLES:  # the rollups of what is left, as they were
            conn.execute(f"DELETE FROM {table}")
        for statement in rollup.backfill_all("sqlite"):
            conn.execute(statement)
    assert written_and_rebuilt(db)[2] == 30 and max_rowid(db) == 20
    storage = await opened(db, rollup_seconds=600.0)
    assert written_and_rebuilt(db)[2] == 20
    await insert_together(storage, rows(T0 + timedelta(days=1), 5))
    await crash(storage)
    assert max_rowid(db) == 25
    storage = await opened(db)
    try:
        written, rebuilt, done = written_and_rebuilt(db)
        assert written == rebuilt and done == 25
    finally:
        await storage.close()


# -- Hypothesis: rollups == the ledger's sums, whatever happens between --------------------

steps = st.lists(
    st.one_of(
        st.tuples(st.just("batch"), rows_strategy, st.booleans()),  # rows (and a retry of one)
        st.tuples(st.just("flush")),
        st.tuples(st.just("close")),  # a clean close and reopen
        st.tuples(st.just("crash")),  # the process dies; reopened
        st.tuples(st.just("prune"), st.integers(0, 3)),  # whole days before epoch + n days
    ),
    max_size=8,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steps)
async def test_rollups_equal_the_ledgers_sums_across_batches_flushes_crashes_and_prunes(
    tmp_path_factory: pytest.TempPathFactory, plan: list[tuple[Any, ...]]
) -> None:
    db = tmp_path_factory.mktemp("behind") / "g.db"
    storage = await opened(db, rollup_seconds=600.0)
    n = 0
    try:
        for step in plan:
            if step[0] == "batch":
                recs = [record(T0, n + i, row) for i, row in enumerate(step[1])]
                n += len(recs)
                if step[2] and n:
                    recs.append(record(T0, 0, Row(0, "a", "p1", "m1", None, "ok", (1, 1, 1, 1), 1, 1, 1)))
                await insert_together(storage, recs)
            elif step[0] == "flush":
                await storage.flush_rollups()
            elif step[0] in ("close", "crash"):
                await (storage.close() if step[0] == "close" else crash(storage))
                if step[0] == "close":
                    written, rebuilt, _ = written_and_rebuilt(db)
                    assert written == rebuilt
                storage = await opened(db, rollup_seconds=600.0)
                written, rebuilt, _ = written_and_rebuilt(db)
                assert written == rebuilt
            else:
                cut = _cut(T0 + timedelta(days=step[1]))
                await storage.prune("ledger", cut, 1000)
                await storage.prune("rollup", cut, 1000)
                written, rebuilt, _ = written_and_rebuilt(db)
                assert written == rebuilt
        await storage.flush_rollups()
        written, rebuilt, done = written_and_rebuilt(db)
        assert written == rebuilt
        assert done == max_rowid(db)
    finally:
        await storage.close()
    written, rebuilt, _ = written_and_rebuilt(db)
    assert written == rebuilt
