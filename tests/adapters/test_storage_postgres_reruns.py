"""Postgres transactions rolled back for a deadlock or a serialization failure
(adapters/storage/pg_pool.py, `_run`): they did nothing, so they are run again, a few
times; a transaction rolled back every time fails with `StorageContention` (a 503
`storage_contention`), never the "connection failed" of an unreachable database.

The failures are real server errors: a trigger in the test database raises the SQLSTATE
for the first N statements it sees (counted by a sequence, which a rollback does not
undo), and one test makes Postgres detect a real deadlock with a second connection.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import trio
from psycopg import sql

from adapters.storage.pg_pool import RERUN_PAUSES
from adapters.storage.postgres import PostgresStorage
from core.errors import StorageContention, StorageUnavailable
from tests.adapters.test_storage import T0, make_usage

pytestmark = pytest.mark.postgres


@pytest.fixture
async def storage(postgres_url: str) -> AsyncIterator[PostgresStorage]:
    store = PostgresStorage(postgres_url)
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()


def inject(url: str, table: str, sqlstate: str, times: int, when: str = "true") -> None:
    """The next `times` writes to `table` matching `when` (on NEW) raise `sqlstate`:
    updates of `state` (its INSERT ... ON CONFLICT DO NOTHING passes), inserts of the
    other tables."""
    body = sql.SQL(
        "BEGIN IF ({when}) AND nextval('umg_test_tries') <= {times} THEN"
        " RAISE EXCEPTION 'injected by the test' USING ERRCODE = {code}; END IF;"
        " RETURN NEW; END"
    ).format(when=sql.SQL(when), times=sql.Literal(times), code=sql.Literal(sqlstate))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SEQUENCE IF EXISTS umg_test_tries")
        conn.execute("CREATE SEQUENCE umg_test_tries")
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE FUNCTION umg_test_fail() RETURNS trigger"
                " LANGUAGE plpgsql AS {}"
            ).format(sql.Literal(body.as_string(conn)))
        )
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE TRIGGER umg_test_fail BEFORE {} ON {}"
                " FOR EACH ROW EXECUTE FUNCTION umg_test_fail()"
            ).format(sql.SQL("UPDATE" if table == "state" else "INSERT"), sql.Identifier(table))
        )


def tries(url: str) -> int:
    """How many writes the trigger saw (failed or not)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT last_value, is_called FROM umg_test_tries").fetchone()
    assert row is not None
    return int(row[0]) if row[1] else 0


def counting(calls: list[Any]) -> Any:
    def apply(state: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        calls.append(state)
        return len(calls), {"n": len(calls)}

    return apply


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])  # serialization failure, deadlock
async def test_a_transaction_rolled_back_twice_is_run_again_and_goes_through(
    storage: PostgresStorage, postgres_url: str, sqlstate: str
) -> None:
    await storage.update_state("flaky", lambda s: (None, {"n": 0}))
    inject(postgres_url, "state", sqlstate, times=2, when="NEW.scope = 'flaky'")
    calls: list[Any] = []
    assert await storage.update_state("flaky", counting(calls)) == 3  # the last run's result
    assert tries(postgres_url) == 3
    assert calls == [{"n": 0}] * 3  # each run saw the state as it was: nothing was kept
    assert await storage.read_state("flaky") == {"n": 3}


async def test_a_transaction_rolled_back_every_time_fails_with_storage_contention(
    storage: PostgresStorage, postgres_url: str
) -> None:
    await storage.update_state("flaky", lambda s: (None, {"n": 0}))
    inject(postgres_url, "state", "40P01", times=1000, when="NEW.scope = 'flaky'")
    calls: list[Any] = []
    with pytest.raises(StorageContention) as caught:
        await storage.update_state("flaky", counting(calls))
    err = caught.value
    assert isinstance(err, StorageUnavailable)  # every caller treats it as "away for now"
    assert (err.status, err.code, err.retry_after) == (503, "storage_contention", 2.0)
    assert "contention" in err.message
    assert isinstance(err.__cause__, psycopg.errors.DeadlockDetected)
    assert tries(postgres_url) == len(calls) == 1 + len(RERUN_PAUSES)
    assert await storage.read_state("flaky") == {"n": 0}
    # not the unreachable-database breaker: the next call goes to the database at once
    assert await storage.update_state("other", lambda s: ("ok", {})) == "ok"


async def test_a_ledger_batch_rolled_back_once_is_committed_by_its_rerun(
    storage: PostgresStorage, postgres_url: str
) -> None:
    inject(postgres_url, "usage", "40P01", times=1)
    rows = [make_usage(n, T0 + timedelta(seconds=n)) for n in range(5)]
    answers: list[bool] = []

    async def record(n: int) -> None:
        answers.append(await storage.insert_usage(rows[n]))

    async with trio.open_nursery() as nursery:
        for n in range(5):
            nursery.start_soon(record, n)
    assert answers == [True] * 5
    assert await storage.usage_count() == 5
    with psycopg.connect(postgres_url) as conn:  # the rollup counts each row once
        assert conn.execute(
            "SELECT sum(requests), sum(cost) FROM usage_hourly_nokey"
        ).fetchone() == (5, Decimal("0.0000012345") * 5)


async def test_a_real_deadlock_with_another_connection_is_rerun(
    storage: PostgresStorage, postgres_url: str
) -> None:
    """Another connection holds scope b and then asks for a, while `update_states` holds
    a and waits for b: Postgres aborts one of the two. The other connection waits 60 s
    before it checks for a deadlock, the storage's 1 s (the default), so the storage's
    transaction is the one aborted; its rerun then goes through."""
    await storage.update_states(("a", "b"), lambda s: (None, {"a": {"v": 0}, "b": {"v": 0}}))
    holding_b = threading.Event()

    def other() -> None:
        with psycopg.connect(postgres_url) as conn:
            conn.execute("SET deadlock_timeout = '60s'")
            me = conn.info.backend_pid
            conn.execute("SELECT 1 FROM state WHERE scope = 'b' FOR UPDATE")
            holding_b.set()
            while not conn.execute(  # until the storage's transaction waits for b
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> %s AND datname ="
                " current_database() AND wait_event_type = 'Lock'", (me,)
            ).fetchone() == (1,):
                pass
            conn.execute("SELECT 1 FROM state WHERE scope = 'a' FOR UPDATE")
            conn.execute("UPDATE state SET data = '{\"v\": 1}' WHERE scope IN ('a', 'b')")
            conn.commit()

    def bump(states: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "done", {s: {"v": (states[s] or {})["v"] + 10} for s in ("a", "b")}

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, other)
        await trio.to_thread.run_sync(holding_b.wait)
        with trio.fail_after(30):
            assert await storage.update_states(("a", "b"), bump) == "done"
    # the other connection committed first (the storage's first try was rolled back)
    assert await storage.read_states(["a", "b"]) == {"a": {"v": 11}, "b": {"v": 11}}
