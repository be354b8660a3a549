"""The embedded backend's hot path (adapters/storage/sqlite.py): state in memory owned by
one process, ledger rows through one writer with group commit, and what survives a
restart or a crash (a real child process killed with `os._exit`)."""

from __future__ import annotations

import json
import logging
import sys
import textwrap
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from adapters.storage import open_storage
from adapters.storage.memstate import StateTable
from adapters.storage.owner import StorageBusy
from adapters.storage.sqlite import SQLiteStorage
from tests.adapters.test_storage import T0, make_key, make_usage

ROOT = Path(__file__).resolve().parents[2]


def _increment(state: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
    count = (state or {}).get("count", 0) + 1
    return count, {"count": count}


def _set(value: dict[str, Any]) -> Any:
    return lambda state: (None, value)


async def opened(path: Path, **options: Any) -> SQLiteStorage:
    storage = SQLiteStorage(str(path), **options)
    await storage.migrate()
    return storage


@contextmanager
def thread_hops() -> Iterator[list[object]]:
    """The worker-thread trips (`trio.to_thread.run_sync` calls) made inside the block."""
    hops: list[object] = []
    real = trio.to_thread.run_sync

    async def counted(fn: Any, *args: Any, **options: Any) -> Any:
        hops.append(fn)
        return await real(fn, *args, **options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trio.to_thread, "run_sync", counted)
        yield hops


async def insert_together(storage: SQLiteStorage, numbers: Iterable[int]) -> list[bool]:
    """One row per number, each inserted by its own task, all started at once."""
    answers: list[bool] = []

    async def record(n: int) -> None:
        answers.append(await storage.insert_usage(make_usage(n, T0)))

    async with trio.open_nursery() as nursery:
        for n in numbers:
            nursery.start_soon(record, n)
    return answers


async def stored_state(path: Path) -> dict[str, Any]:
    """Every state row as committed in the file (read with a plain connection)."""
    def read() -> dict[str, Any]:
        import sqlite3

        with sqlite3.connect(path) as conn:
            return {s: json.loads(d) for s, d in conn.execute("SELECT scope, data FROM state")}

    return await trio.to_thread.run_sync(read)


# -- one owner -------------------------------------------------------------------------


async def test_a_second_storage_on_the_file_cannot_take_the_state(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    first = await opened(db)
    second = await opened(db)  # keys, jobs, reads of the ledger: fine without the state
    try:
        await first.update_state("rl:req:k", _increment)
        with pytest.raises(StorageBusy, match="Postgres"):
            await second.update_state("rl:req:k", _increment)
        with pytest.raises(StorageBusy):
            await second.read_state("anything")
        with pytest.raises(StorageBusy):
            await opened(db, owner=True)  # how `umg serve` opens it: refused at start
        await second.insert_key(make_key(1))
        assert await first.key_by_prefix("umg_0001") is not None
        # writing the ledger takes the file too: its rollups are written behind, from
        # the writing process's memory (adapters/storage/rollup_behind.py)
        with pytest.raises(StorageBusy):
            await second.insert_usage(make_usage(1, T0))
        assert await first.insert_usage(make_usage(1, T0))
        assert await second.usage_count() == 1
    finally:
        await first.close()
        await second.close()
    third = await opened(db, owner=True)  # the owner closed: the lock is free again
    try:
        assert await third.read_state("rl:req:k") == {"count": 1}
    finally:
        await third.close()


# -- state in memory ---------------------------------------------------------------------


async def test_many_tasks_update_one_scope_exactly_and_it_is_persisted(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    storage = await opened(db, flush_seconds=60.0)
    seen: list[int] = []

    async def bump(scope: str) -> None:
        for _ in range(25):
            seen.append(await storage.update_state(scope, _increment))
            await trio.lowlevel.checkpoint()

    try:
        async with trio.open_nursery() as nursery:
            for n in range(40):
                nursery.start_soon(bump, "rl:req:hot" if n % 2 else "key:hot:total")
        assert sorted(seen) == sorted([*range(1, 501), *range(1, 501)])
        assert await storage.read_state("rl:req:hot") == {"count": 500}
        assert await stored_state(db) == {}  # behind: nothing committed yet (60 s window)
    finally:
        await storage.close()
    assert await stored_state(db) == {"rl:req:hot": {"count": 500}, "key:hot:total": {"count": 500}}


async def test_a_scope_many_tasks_want_at_once_is_read_once(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    storage = await opened(db)
    await storage.update_state("rl:req:cold", _increment)
    await storage.close()
    storage = await opened(db)  # a fresh process: nothing in memory
    reads: list[str] = []
    storage._run = _counting(storage._run, reads)  # type: ignore[method-assign]
    try:
        seen: list[int] = []

        async def bump() -> None:
            seen.append(await storage.update_state("rl:req:cold", _increment))

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(bump)
        assert sorted(seen) == list(range(2, 52))  # exact, from the stored count on
        assert len(reads) == 1  # one read of the scope, not fifty
    finally:
        await storage.close()


def _counting(run: Any, reads: list[str]) -> Any:
    async def counted(fn: Any) -> Any:
        reads.append("read")
        return await run(fn)

    return counted


async def test_a_ledger_row_commits_the_state_changed_before_it(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    storage = await opened(db, flush_seconds=60.0)
    try:
        await storage.update_state("key:k1:total", _set({"spent": "0.25"}))  # a settle
        await storage.update_state("rl:tok:k1", _set({"level": 5.0}))
        assert await stored_state(db) == {}
        assert await storage.insert_usage(make_usage(1, T0))
        assert await stored_state(db) == {
            "key:k1:total": {"spent": "0.25"}, "rl:tok:k1": {"level": 5.0}
        }
    finally:
        await storage.close()


async def test_changed_state_is_committed_within_flush_seconds_without_any_row(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    db = tmp_path / "g.db"
    storage = await opened(db, flush_seconds=5.0)
    try:
        await storage.update_state("rl:req:k", _increment)
        mock_clock.jump(4.9)
        await trio.testing.wait_all_tasks_blocked()
        assert await stored_state(db) == {}  # not yet due
        mock_clock.jump(0.2)  # 5.1 s after the change: due (Trio time stands still now)
        while (found := await stored_state(db)) == {}:
            await trio.testing.wait_all_tasks_blocked()
        assert found == {"rl:req:k": {"count": 1}}
    finally:
        await storage.close()


async def test_other_scopes_are_committed_before_update_state_returns(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    storage = await opened(db, flush_seconds=60.0)
    try:
        secret = await storage.update_state(
            "webhooks:secret:t1", lambda s: ("whsec_x", {"secret": "whsec_x"})
        )
        assert secret == "whsec_x"
        assert await stored_state(db) == {"webhooks:secret:t1": {"secret": "whsec_x"}}

        def broken(state: dict[str, Any] | None) -> tuple[None, dict[str, Any]]:
            raise RuntimeError("rule failed")

        with pytest.raises(RuntimeError):
            await storage.update_state("webhooks:secret:t1", broken)
        with pytest.raises(TypeError):  # not JSON: refused, nothing changed
            await storage.update_state("webhooks:secret:t1", _set({"secret": object()}))
        assert await storage.read_state("webhooks:secret:t1") == {"secret": "whsec_x"}
    finally:
        await storage.close()


async def test_a_state_that_cannot_be_stored_is_discarded_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "g.db"
    storage = await opened(db)
    try:
        await storage.update_state("rl:req:k", _set({"level": 1.0}))
        await storage.insert_usage(make_usage(1, T0))
        await storage.update_state("rl:req:k", _set({"level": float("nan")}))
        with caplog.at_level(logging.ERROR, logger="umg.storage"):
            assert await storage.insert_usage(make_usage(2, T0))  # the row is kept
        assert "rl:req:k" in caplog.text
        assert await storage.read_state("rl:req:k") == {"level": 1.0}  # the stored one
        assert await storage.usage_count() == 2
    finally:
        await storage.close()


def test_the_state_table_drops_least_recently_used_clean_scopes_only() -> None:
    table = StateTable(max_rows=2)
    table.load("a", {"n": 1})
    table.set("b", {"n": 2}, dirty=True)
    table.load("c", {"n": 3})
    table.value("a")  # used: c is now the oldest clean one
    table.evict()
    assert (table.loaded("a"), table.loaded("b"), table.loaded("c")) == (True, True, False)
    table.set("d", {"n": 4}, dirty=True)
    table.evict()
    assert not table.loaded("a") and table.loaded("b") and table.loaded("d")  # dirty: kept
    assert sorted(s for s, _ in table.take_dirty()) == ["b", "d"]


# -- the ledger writer -----------------------------------------------------------------


async def test_many_concurrent_rows_are_group_committed_none_lost_none_doubled(
    tmp_path: Path,
) -> None:
    storage = await opened(tmp_path / "g.db", queue_rows=16)
    answers: dict[int, bool] = {}

    async def record(n: int) -> None:
        row = make_usage(n, T0 + timedelta(milliseconds=n), request_id=f"req_{n % 150}")
        answers[n] = await storage.insert_usage(row)

    try:
        async with trio.open_nursery() as nursery:
            for n in range(300):
                nursery.start_soon(record, n)
        assert await storage.usage_count() == 150
        for rid in range(150):  # one of the two attempts per request_id was inserted
            assert answers[rid] != answers[rid + 150]
        assert storage.writer.batches < 300  # rows shared transactions
    finally:
        await storage.close()


async def test_a_small_batch_commits_on_the_trio_thread(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    storage = await opened(db, flush_seconds=60.0)
    try:
        await storage.update_state("key:k1:total", _set({"spent": "0.25"}))  # its first read is a hop
        with thread_hops() as hops:
            assert await storage.insert_usage(make_usage(1, T0))
        assert hops == []  # no thread hop for the row and the state it carried
        assert await stored_state(db) == {"key:k1:total": {"spent": "0.25"}}  # committed
        assert await storage.usage_count() == 1
    finally:
        await storage.close()


async def test_a_batch_of_a_hundred_rows_commits_on_the_trio_thread(tmp_path: Path) -> None:
    # 64 concurrent requests make batches of 30-40 rows: they too commit without a hop
    db = tmp_path / "g.db"
    storage = await opened(db, flush_seconds=60.0)
    try:
        assert await storage.insert_usage(make_usage(0, T0))  # connects (a hop)
        batches = storage.writer.batches
        with thread_hops() as hops:
            answers = await insert_together(storage, range(1, 101))  # all queued before the writer's next step
        assert answers == [True] * 100
        assert storage.writer.batches == batches + 1 and hops == []
        assert await storage.usage_count() == 101
    finally:
        await storage.close()


async def test_a_backlog_of_rows_commits_in_batches_the_trio_thread_takes(tmp_path: Path) -> None:
    # 1,000 streams ending together queue hundreds of rows: never one batch too large for
    # the Trio thread (it went to a worker thread, and the trip there and back cost turns
    # of the run loop, each a whole turn of every runnable task)
    from adapters.storage.sqlite_conn import HERE_ROWS

    db = tmp_path / "g.db"
    storage = await opened(db, flush_seconds=60.0)
    try:
        assert await storage.insert_usage(make_usage(0, T0))  # connects (a hop)
        batches = storage.writer.batches
        queued = 2 * HERE_ROWS + 44
        with thread_hops() as hops:
            answers = await insert_together(storage, range(1, queued + 1))
        assert answers == [True] * queued
        assert storage.writer.batches == batches + 3 and hops == []
        assert await storage.usage_count() == queued + 1
    finally:
        await storage.close()


async def test_a_batch_waits_for_a_call_holding_the_connection_then_commits_on_the_trio_thread(
    tmp_path: Path,
) -> None:
    # a read (or a checkpoint) in a worker thread holds the connection: the batch waits
    # for it instead of a thread hop of its own (turns of the run loop, each a whole
    # turn of every runnable task when 1,000 streams relay at once)
    import time

    db = tmp_path / "g.db"
    storage = await opened(db, flush_seconds=60.0)
    try:
        assert await storage.insert_usage(make_usage(0, T0))  # connects (a hop)
        batches = storage.writer.batches
        answers: list[bool] = []

        async def record(n: int) -> None:
            answers.append(await storage.insert_usage(make_usage(n, T0)))

        with thread_hops() as hops:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(storage._run, lambda conn: time.sleep(0.05))  # holds it in a thread
                await trio.sleep(0.01)
                for n in range(1, 11):
                    nursery.start_soon(record, n)
        assert answers == [True] * 10
        assert storage.writer.batches == batches + 1
        assert len(hops) == 1  # the read's own: the batch committed on the Trio thread
        assert await storage.usage_count() == 11
    finally:
        await storage.close()


async def test_a_file_another_process_writes_makes_the_commit_wait_off_the_trio_thread(
    tmp_path: Path,
) -> None:
    import sqlite3

    db = tmp_path / "g.db"
    storage = await opened(db)
    other = sqlite3.connect(db, isolation_level=None)  # as `umg keys ...` would
    try:
        other.execute("BEGIN IMMEDIATE")  # it holds the write lock
        done: list[bool] = []

        async def record() -> None:
            done.append(await storage.insert_usage(make_usage(1, T0)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(record)
            for _ in range(10):  # the Trio thread goes on running meanwhile (counted, not timed)
                await trio.sleep(0.01)
            assert done == []
            other.execute("COMMIT")  # the lock is free: the waiting commit goes through
        assert done == [True]
        assert await storage.usage_count() == 1
    finally:
        other.close()
        await storage.close()


async def test_the_wal_is_checkpointed_outside_the_commits(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    storage = await opened(db)
    try:
        for n in range(1200):  # one transaction each
            await storage.insert_usage(make_usage(n, T0 + timedelta(hours=n)))
        while storage._checkpointing:
            await trio.sleep(0.01)
        # without checkpoints (autocheckpoint is off) the WAL would hold every commit's
        # pages: 1,200 transactions of about 11 pages of 4 KB each, over 50 MB; with
        # one every 100 transactions it is reused from the start each time
        assert Path(f"{db}-wal").stat().st_size < 12 * 1024 * 1024
        assert await storage.usage_count() == 1200
    finally:
        await storage.close()


async def test_a_full_queue_makes_callers_wait_and_drops_nothing(tmp_path: Path) -> None:
    storage = await opened(tmp_path / "g.db", queue_rows=4)
    done: list[int] = []

    async def record(n: int) -> None:
        await storage.insert_usage(make_usage(n, T0))
        done.append(n)

    try:
        await storage.take_ledger()  # its fold of what a crash left uses the connection
        async with trio.open_nursery() as nursery:
            async with storage._lock:  # the database is slow: nothing can commit
                for n in range(20):
                    nursery.start_soon(record, n)
                await trio.testing.wait_all_tasks_blocked()
                # 4 rows taken (in the batch waiting for the connection, or queued);
                # 16 callers wait for room
                assert storage.writer.held == 4 and done == []
        assert sorted(done) == list(range(20))
        assert await storage.usage_count() == 20
    finally:
        await storage.close()


async def test_duplicates_in_one_batch_and_across_batches(tmp_path: Path) -> None:
    storage = await opened(tmp_path / "g.db")
    results: list[bool] = []
    try:
        async with trio.open_nursery() as nursery:
            for n in range(10):
                row = make_usage(n, T0, request_id="req_same")
                nursery.start_soon(lambda r=row: _append(results, storage.insert_usage(r)))
        assert sorted(results) == [False] * 9 + [True]
        assert await storage.insert_usage(make_usage(99, T0, request_id="req_same")) is False
        [row] = await storage.usage_rows("t1", T0, T0 + timedelta(seconds=1))
        assert row.request_id == "req_same"
    finally:
        await storage.close()


async def _append(results: list[bool], pending: Any) -> None:
    results.append(await pending)


async def test_a_row_sqlite_refuses_fails_alone_and_its_batch_is_committed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two rows in a batch of 12 cannot be stored (a trigger aborts one: an
    IntegrityError; the other's token count does not fit 64 bits: an OverflowError at
    binding, not an sqlite3 error): the batch is committed again row by row, so their
    callers get an sqlite3 error and the other ten rows and their rollups go in."""
    import sqlite3

    storage = await opened(tmp_path / "s.db")
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON usage WHEN NEW.model = 'refused'"
            " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    bad: dict[int, dict[str, Any]] = {4: {"model": "refused"}, 9: {"input_tokens": 2**63}}
    answers: dict[int, bool | BaseException] = {}

    async def record(n: int) -> None:
        try:
            answers[n] = await storage.insert_usage(make_usage(n, T0, **bad.get(n, {})))
        except sqlite3.Error as err:
            answers[n] = err

    try:
        with caplog.at_level(logging.WARNING, logger="umg.storage"):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(record, 0)  # a batch alone
                await trio.testing.wait_all_tasks_blocked()
                for n in range(1, 13):  # queued while it commits: the next batch, together
                    nursery.start_soon(record, n)
        assert isinstance(answers.pop(4), sqlite3.IntegrityError)
        overflow = answers.pop(9)
        assert isinstance(overflow, sqlite3.DataError) and isinstance(overflow.__cause__, OverflowError)
        assert answers == {n: True for n in range(13) if n not in bad}
        assert any("batch of 12 ledger rows" in r.getMessage() for r in caplog.records)
        rows = await storage.usage_rows("t1", T0 - timedelta(hours=1), T0 + timedelta(hours=1))
        assert sorted(r.request_id for r in rows) == sorted(f"req_{n}" for n in range(13) if n not in bad)
        await storage.flush_rollups()  # another connection reads them
        with sqlite3.connect(tmp_path / "s.db") as conn:
            hourly = conn.execute("SELECT sum(requests), group_concat(cost) FROM usage_hourly_nokey").fetchone()
        assert hourly[0] == 11 and sum(map(Decimal, hourly[1].split(","))) == Decimal("0.0000012345") * 11
    finally:
        await storage.close()


async def test_a_caller_cancelled_while_waiting_does_not_withdraw_its_row(tmp_path: Path) -> None:
    storage = await opened(tmp_path / "g.db")
    scope = trio.CancelScope()

    async def record() -> None:
        with scope:
            await storage.insert_usage(make_usage(1, T0))
        assert scope.cancelled_caught  # it was still waiting when cancelled

    try:
        await storage.take_ledger()  # its fold of what a crash left uses the connection
        async with storage._lock:  # the connection is busy: the commit has to wait
            async with trio.open_nursery() as nursery:
                nursery.start_soon(record)
                await trio.testing.wait_all_tasks_blocked()  # queued, waiting for its commit
                assert storage.writer.held == 1
                scope.cancel()
        await storage.insert_usage(make_usage(2, T0))
        assert await storage.usage_count() == 2
    finally:
        await storage.close()


async def test_close_commits_what_is_queued_and_then_refuses(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    storage = await opened(db, flush_seconds=60.0)
    await storage.update_state("key:k:total", _set({"spent": "1"}))
    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(storage.insert_usage, make_usage(n, T0))
        await trio.testing.wait_all_tasks_blocked()
        await storage.close()
    with pytest.raises(RuntimeError, match="closed"):
        await storage.insert_usage(make_usage(99, T0))
    with pytest.raises(RuntimeError, match="closed"):
        await storage.update_state("key:k:total", _increment)
    again = await opened(db)
    try:
        assert await again.usage_count() == 20
        assert await again.read_state("key:k:total") == {"spent": "1"}
    finally:
        await again.close()


# -- restarts and crashes ----------------------------------------------------------------


async def test_a_restart_keeps_budgets_and_buckets(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    storage = await opened(db, owner=True)
    await storage.update_state("key:k:2026-03", _set({"limit": "10", "spent": "2.5"}))
    await storage.update_state("rl:req:k", _set({"level": 3.0, "updated_at": 1.0}))
    await storage.close()
    storage = await opened(db, owner=True)
    try:
        assert await storage.read_state("key:k:2026-03") == {"limit": "10", "spent": "2.5"}
        assert await storage.read_state("rl:req:k") == {"level": 3.0, "updated_at": 1.0}
    finally:
        await storage.close()


CRASH = textwrap.dedent(
    """
    import os, sys, trio
    from datetime import UTC, datetime
    from adapters.storage.sqlite import SQLiteStorage
    from tests.adapters.test_storage import make_usage

    def put(value):
        return lambda state: (None, value)

    async def main(db):
        s = SQLiteStorage(db, owner=True, flush_seconds=0.2)
        await s.migrate()
        await s.update_state("rl:req:k", put({"level": 1.0}))
        await trio.sleep(2.0)  # well past flush_seconds: committed by the timer
        await s.update_state("key:k:total", put({"spent": "0.5"}))  # settled ...
        # ... then recorded (alone: in this task, as the driver's only open run does)
        await s.insert_usage(make_usage(1, datetime.now(UTC)), alone=sys.argv[2] == "alone")
        await s.update_state("webhooks:secret:t", put({"secret": "whsec_1"}))
        await s.update_state("rl:tok:k", put({"level": 9.0}))  # may be lost
        print("recorded", flush=True)
        os._exit(17)  # a crash: no close, no flush

    trio.run(main, sys.argv[1])
    """
)


@pytest.mark.parametrize("how", ["queued", "alone"])
async def test_a_crash_keeps_every_recorded_row_and_the_budget_settled_before_it(
    tmp_path: Path, how: str
) -> None:
    db = tmp_path / "g.db"
    done = await trio.run_process(
        [sys.executable, "-c", CRASH, str(db), how], cwd=ROOT, capture_stdout=True, check=False
    )
    assert done.returncode == 17 and done.stdout == b"recorded\n"
    storage = await opened(db, owner=True)  # the dead process's lock went with it
    try:
        assert await storage.usage_count() == 1
        assert await storage.read_state("key:k:total") == {"spent": "0.5"}
        assert await storage.read_state("webhooks:secret:t") == {"secret": "whsec_1"}
        assert await storage.read_state("rl:req:k") == {"level": 1.0}
    finally:
        await storage.close()


async def test_open_storage_memory_needs_no_lock(tmp_path: Path) -> None:
    del tmp_path
    storage = open_storage("sqlite:///:memory:", owner=True)
    await storage.migrate()
    try:
        assert await storage.update_state("rl:req:k", _increment) == 1
        assert await storage.insert_usage(make_usage(1, T0))
        assert await storage.read_state("rl:req:k") == {"count": 1}
    finally:
        await storage.close()


class _WriterSteps(trio.abc.Instrument):
    """Counts the steps of the ledger writer task."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name == "umg-storage-writer":
            self.steps += 1


async def test_a_lone_row_commits_in_its_callers_task_with_the_state(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    storage = await opened(db, flush_seconds=60.0)
    steps = _WriterSteps()
    try:
        assert await storage.insert_usage(make_usage(0, T0))  # connects (through the writer)
        await trio.testing.wait_all_tasks_blocked()  # the writer waits for work
        trio.lowlevel.add_instrument(steps)
        # dirty: the idle writer's wait moves to the flush deadline without waking it
        await storage.update_state("key:k1:total", _set({"spent": "0.25"}))
        batches = storage.writer.batches
        assert await storage.insert_usage(make_usage(1, T0), alone=True)
        assert not await storage.insert_usage(make_usage(1, T0), alone=True)  # already there
        await trio.testing.wait_all_tasks_blocked()
        assert steps.steps == 0 and storage.writer.batches == batches + 2  # the writer never ran
        assert await stored_state(db) == {"key:k1:total": {"spent": "0.25"}}  # committed with it
        assert await storage.insert_usage(make_usage(2, T0))  # not alone: through the writer
        assert steps.steps > 0
        assert await storage.usage_count() == 3
    finally:
        trio.lowlevel.remove_instrument(steps)
        await storage.close()


async def test_a_lone_row_the_file_would_make_wait_goes_to_the_writer(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "g.db"
    storage = await opened(db, flush_seconds=60.0)
    other = sqlite3.connect(db, isolation_level=None)  # as `umg keys ...` would
    try:
        assert await storage.insert_usage(make_usage(0, T0))  # connects
        await storage.update_state("key:k1:total", _set({"spent": "0.5"}))
        other.execute("BEGIN IMMEDIATE")  # it holds the write lock
        done: list[bool] = []

        async def record() -> None:
            done.append(await storage.insert_usage(make_usage(1, T0), alone=True))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(record)
            for _ in range(10):  # the Trio thread goes on running meanwhile
                await trio.sleep(0.01)
            assert done == []
            other.execute("COMMIT")
        assert done == [True]
        assert await stored_state(db) == {"key:k1:total": {"spent": "0.5"}}  # not lost on the way
        assert await storage.usage_count() == 2
    finally:
        other.close()
        await storage.close()


async def test_a_lone_row_sqlite_refuses_raises_and_its_state_is_committed_later(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "g.db"
    storage = await opened(db, flush_seconds=0.05)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON usage WHEN NEW.model = 'refused'"
            " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    try:
        assert await storage.insert_usage(make_usage(0, T0))  # connects
        await storage.update_state("key:k1:total", _set({"spent": "0.75"}))
        with pytest.raises(sqlite3.IntegrityError):
            await storage.insert_usage(make_usage(1, T0, model="refused"), alone=True)
        with pytest.raises(sqlite3.DataError):  # not an sqlite3 error at binding: wrapped
            await storage.insert_usage(make_usage(2, T0, input_tokens=2**63), alone=True)
        await trio.sleep(0.3)  # the writer's flush of the state the rollback took back
        assert await stored_state(db) == {"key:k1:total": {"spent": "0.75"}}
        assert await storage.insert_usage(make_usage(3, T0), alone=True)
        assert await storage.usage_count() == 2
    finally:
        await storage.close()


async def test_a_lone_row_takes_one_statement_per_rollup_table_and_adds_its_cost_exactly(
    tmp_path: Path,
) -> None:
    db = tmp_path / "g.db"
    storage = await opened(db, flush_seconds=60.0)
    try:
        assert await storage.insert_usage(make_usage(0, T0, cost=Decimal("0.1000000001")))
        conn = storage._conn
        assert conn is not None
        seen: list[str] = []
        conn.set_trace_callback(seen.append)
        try:  # the same rollup rows as row 0's: each upsert adds to a row that exists
            assert await storage.insert_usage(make_usage(1, T0, cost=Decimal("0.2000000002")), alone=True)
        finally:
            conn.set_trace_callback(None)
        tables = [s.split()[2] if s.startswith("INSERT") else s.split()[0] for s in seen]
        # the row alone in its batch: the rollups are written behind (rollup_behind.py)
        assert tables == ["BEGIN", "usage", "COMMIT"], seen
        seen.clear()
        conn.set_trace_callback(seen.append)
        try:
            assert await storage.flush_rollups() == 2  # rows 0 and 1, one rollup row each
        finally:
            conn.set_trace_callback(None)
        tables = [s.split()[2] if s.startswith("INSERT") else s.split()[0] for s in seen]
        # no read of a row's cost before its write: one upsert per rollup table, and the
        # watermark, in one transaction
        assert tables == ["BEGIN", "SAVEPOINT", "usage_hourly_nokey", "usage_hourly_nokey_bins",
                          "usage_daily", "usage_hourly_all", "usage_hourly_model", "RELEASE",
                          "UPDATE", "COMMIT"], seen
        costs = await storage._run(lambda c: [c.execute(f"SELECT cost FROM {t}").fetchall() for t in
                                              ("usage_hourly_nokey", "usage_daily", "usage_hourly_all",
                                               "usage_hourly_model")])
        assert costs == [[("0.3000000003",)]] * 4
    finally:
        await storage.close()
