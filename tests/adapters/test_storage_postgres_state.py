"""Postgres state operations on Trio-driven connections (adapters/storage/pg_state.py,
pg_lines.py, pg_line.py `pipeline`): a change is two round trips with no worker thread,
the caller's function runs in its own task, and whatever interrupts a change (the
function raising, a cancel while the row is locked elsewhere, the connection lost, a
statement refused) leaves the row as it was and the next change goes through."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import trio

from adapters.storage.pg_line import Line
from adapters.storage.postgres import PostgresStorage
from core.errors import StorageUnavailable
from tests.adapters.test_storage import make_key

pytestmark = pytest.mark.postgres


@pytest.fixture
async def storage(postgres_url: str) -> AsyncIterator[PostgresStorage]:
    store = PostgresStorage(postgres_url, pool_size=2)
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()


def _bump(state: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
    n = int((state or {}).get("n", 0)) + 1
    return n, {"n": n}


def _open_lines(storage: PostgresStorage) -> list[Line]:
    return [line for line in storage._lines._all if line._conn is not None]


async def test_a_change_is_two_pipelines_without_a_worker_thread(
    storage: PostgresStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a line is open (its connect is the one thread call), changes and reads take
    no worker thread: a change sends two pipelines (BEGIN, INSERT, SELECT FOR UPDATE;
    then UPDATE, COMMIT), a read one, each statement prepared once per connection."""
    assert await storage.update_state("s", _bump) == 1  # opens a line
    threads: list[Any] = []
    pipelines: list[list[bytes]] = []
    run_sync, pipeline = trio.to_thread.run_sync, Line.pipeline

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        threads.append(fn)
        return await run_sync(fn, *args, **kwargs)

    async def recording(self: Line, steps: Any) -> Any:
        pipelines.append([step.query.split()[0] for step in steps])
        return await pipeline(self, steps)

    monkeypatch.setattr(trio.to_thread, "run_sync", counting)
    monkeypatch.setattr(Line, "pipeline", recording)
    assert await storage.update_state("s", _bump) == 2
    assert await storage.update_states(("t", "s"), lambda st: (st, {"s": {"n": 9}, "t": {}})) == {
        "s": {"n": 2}, "t": None,
    }
    assert await storage.read_states(["s", "t", "u"]) == {"s": {"n": 9}, "t": {}, "u": None}
    assert threads == []
    assert pipelines == [
        [b"BEGIN", b"INSERT", b"SELECT"], [b"UPDATE", b"COMMIT"],
        [b"BEGIN", b"INSERT", b"INSERT", b"SELECT", b"SELECT"], [b"UPDATE", b"UPDATE", b"COMMIT"],
        [b"SELECT", b"SELECT", b"SELECT"],
    ]
    (line,) = _open_lines(storage)  # one caller at a time: one connection
    assert line._named == {b"umg_state_create", b"umg_state_lock", b"umg_state_store", b"umg_state_read"}


async def test_a_failing_function_rolls_back_and_its_connection_is_used_again(
    storage: PostgresStorage,
) -> None:
    await storage.update_state("s", _bump)
    (line,) = _open_lines(storage)
    conn = line._conn

    def broken(state: dict[str, Any] | None) -> tuple[None, dict[str, Any]]:
        raise RuntimeError("rule failed")

    with pytest.raises(RuntimeError, match="rule failed"):
        await storage.update_states(("s", "fresh"), broken)
    with pytest.raises(ValueError):  # a new state that is not JSON: rolled back too
        await storage.update_state("s", lambda st: (None, {"n": float("nan")}))
    assert line._conn is conn and line.idle
    assert await storage.update_state("s", _bump) == 2  # nothing of the failed ones was kept
    assert await storage.read_state("fresh") is None


async def test_a_change_cancelled_while_the_row_is_locked_elsewhere_changes_nothing(
    storage: PostgresStorage, postgres_url: str
) -> None:
    """Another connection holds the row: the change waits in SELECT FOR UPDATE. Cancelled
    there, it ends at once, its connection is closed (the server rolls it back) and the
    next change, once the row is free, opens a new one and goes through."""
    await storage.update_state("s", _bump)
    holding, release = threading.Event(), threading.Event()

    def other() -> None:
        with psycopg.connect(postgres_url) as conn:
            conn.execute("SELECT data FROM state WHERE scope = 's' FOR UPDATE")
            holding.set()
            release.wait(10)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, other)
        await trio.to_thread.run_sync(holding.wait)
        with trio.move_on_after(0.3) as waited:
            await storage.update_state("s", _bump)
        assert waited.cancelled_caught
        release.set()
    assert _open_lines(storage) == []  # closed, not lent again half done
    assert await storage.update_state("s", _bump) == 2
    assert await storage.read_state("s") == {"n": 2}


async def test_a_lost_connection_is_503_and_the_next_change_reconnects(
    storage: PostgresStorage, postgres_url: str
) -> None:
    await storage.update_state("s", _bump)
    (line,) = _open_lines(storage)
    assert line._conn is not None
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (line._conn.info.backend_pid,))
    with pytest.raises(StorageUnavailable):
        await storage.update_state("s", _bump)
    assert await storage.update_state("s", _bump) == 2
    assert await storage.read_state("s") == {"n": 2}


async def test_a_statement_refused_mid_pipeline_rolls_back_and_prepares_stay_known(
    storage: PostgresStorage, postgres_url: str
) -> None:
    """A check constraint refuses the UPDATE: the caller gets psycopg's error, the
    transaction is rolled back (the row as before), the connection is clean and keeps
    its prepared statements (preparing them again would fail)."""
    await storage.update_state("s", _bump)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("ALTER TABLE state ADD CONSTRAINT umg_test_small CHECK ((data->>'n')::int < 3)")
    assert await storage.update_state("s", _bump) == 2
    with pytest.raises(psycopg.errors.CheckViolation):
        await storage.update_state("s", _bump)
    (line,) = _open_lines(storage)
    assert line.idle
    assert await storage.read_state("s") == {"n": 2}
    assert await storage.update_state("s", lambda st: (None, {"n": 0})) is None
    assert await storage.update_state("s", _bump) == 1


async def test_a_key_lookup_missing_the_cache_reads_on_a_line_without_a_worker_thread(
    storage: PostgresStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request path's key read (a cache miss) goes on a state connection, and gives
    the same record, every column typed, as the pool's read by id."""
    key = make_key(1, budget_usd=Decimal("12.5"), admin=True)
    await storage.insert_key(key)
    assert await storage.update_state("s", _bump) == 1  # opens a line
    threads: list[Any] = []
    run_sync = trio.to_thread.run_sync

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        threads.append(fn)
        return await run_sync(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counting)
    storage.keys.forget(key.prefix)
    assert await storage.key_by_prefix(key.prefix) == key
    assert await storage.key_by_prefix("umg_nope") is None
    assert threads == []
    assert await storage.key_by_id(key.id) == key  # the pool's read (a thread) agrees
