"""The ledger writer's own connection (adapters/storage/pg_line.py) cancelled mid-statement:
the server is told to stop the statement, so what it was writing is not committed and no
backend keeps running it; the connection is dropped and the next statement opens a new one.
Also: a prepared statement answers as an unnamed one, and the server's own error comes out
as psycopg's exception for its SQLSTATE with the line still usable."""

from __future__ import annotations

import psycopg
import pytest
import trio

from adapters.storage.pg_line import PREPARED, Line

pytestmark = pytest.mark.postgres

UNNAMED = PREPARED + 1  # a key past the prepared ones: sent as an unnamed statement

# a row written, then the statement sleeps holding it uncommitted (autocommit: one transaction)
WRITE_THEN_SLEEP = (
    b"WITH ins AS (INSERT INTO marks (n) VALUES ($1) RETURNING n)"
    b" SELECT n, pg_sleep(30) FROM ins"
)


def _setup(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE marks (n int NOT NULL)")


def _marks(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [n for (n,) in conn.execute("SELECT n FROM marks ORDER BY n").fetchall()]


def _sleeping(url: str) -> int:
    """Backends of this database still running a pg_sleep (other than this one)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state = 'active' AND query LIKE '%pg_sleep%'"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def _until_sleeping(url: str) -> None:
    """Wait until the server is running the statement (so the cancel hits it mid-way)."""
    with trio.fail_after(10):
        while await trio.to_thread.run_sync(_sleeping, url) == 0:
            await trio.sleep(0.02)


@pytest.mark.parametrize("key", [1, UNNAMED], ids=["prepared", "unnamed"])
async def test_a_statement_cancelled_mid_way_commits_nothing_and_the_line_reconnects(
    postgres_url: str, key: int,
) -> None:
    _setup(postgres_url)
    line = Line(postgres_url, connect_timeout=3)
    try:
        # warm: the connection is open (and, for key 1, the size prepared) before the cancel
        assert await line.rows(key, b"SELECT $1::int + 1", [41]) == [(b"42",)]
        first = line._conn
        assert first is not None
        first_pid = first.info.backend_pid
        with trio.move_on_after(30) as outer:
            async with trio.open_nursery() as nursery:
                scope = trio.CancelScope()

                async def write() -> None:
                    with scope:
                        await line.rows(UNNAMED, WRITE_THEN_SLEEP, [7])
                    nursery.cancel_scope.cancel()

                nursery.start_soon(write)
                await _until_sleeping(postgres_url)
                started = trio.current_time()
                scope.cancel()
        assert not outer.cancelled_caught, "the cancelled statement did not return"
        # the cancel returned promptly (the server was asked to stop, not waited out)
        assert trio.current_time() - started < 10
        assert scope.cancelled_caught
        assert line._conn is None  # dropped: its state after a cancel is not trusted
        # the server stops the statement soon (the cancel is handled by another backend,
        # so not at once), long before its 30-s sleep would have ended
        with trio.fail_after(10):
            while await trio.to_thread.run_sync(_sleeping, postgres_url) != 0:
                await trio.sleep(0.05)
        assert _marks(postgres_url) == []  # the row of the cancelled statement is not in
        # the next statement opens a new connection and works, prepared or not
        assert await line.rows(key, b"SELECT $1::int + 1", [1]) == [(b"2",)]
        assert line._conn is not None and line._conn is not first
        assert line._conn.info.backend_pid != first_pid
    finally:
        line.close()


async def test_a_server_error_is_its_sqlstate_class_and_the_line_stays_usable(
    postgres_url: str,
) -> None:
    _setup(postgres_url)
    line = Line(postgres_url, connect_timeout=3)
    try:
        insert = b"INSERT INTO marks (n) VALUES ($1) RETURNING n"
        assert await line.rows(2, insert, [1]) == [(b"1",)]
        conn = line._conn
        with pytest.raises(psycopg.errors.NotNullViolation):
            await line.rows(2, insert, [None])
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            await line.rows(2, insert, ["one"])
        # the same connection, the prepared statement still there
        assert await line.rows(2, insert, [3]) == [(b"3",)]
        assert line._conn is conn and 2 in line._prepared
        assert _marks(postgres_url) == [1, 3]
        assert line.statements == 4
    finally:
        line.close()


async def test_a_closed_line_refuses_statements(postgres_url: str) -> None:
    line = Line(postgres_url, connect_timeout=3)
    assert await line.rows(UNNAMED, b"SELECT 1", []) == [(b"1",)]
    line.close()
    with pytest.raises(RuntimeError, match="closed"):
        await line.rows(UNNAMED, b"SELECT 1", [])
