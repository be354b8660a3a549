"""Postgres's ledger writer (adapters/storage/pg_writer.py, `_commit`): rows from many
requests share one transaction and one multi-row INSERT, each caller still learns whether
ITS row was inserted, the hourly rollup stays equal to the ledger, and two processes'
writers (two storages on one database) never deadlock on the rollup rows they share."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import trio

from adapters.storage.postgres import PostgresStorage
from adapters.storage.records import UsageRecord
from core.errors import StorageUnavailable
from tests.adapters.test_storage import T0, make_usage
from tests.adapters.test_storage_postgres_reruns import inject

pytestmark = pytest.mark.postgres


async def opened(url: str, **options: Any) -> PostgresStorage:
    storage = PostgresStorage(url, **options)
    await storage.migrate()
    return storage


def _rollup(url: str) -> dict[tuple[str, str], tuple[int, Decimal]]:
    """(tenant, model) -> (requests, cost) as the hourly rollup holds them."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tenant, model, sum(requests), sum(cost) FROM usage_hourly_nokey"
            " GROUP BY tenant, model"
        ).fetchall()
    return {(t, m): (int(n), Decimal(c)) for t, m, n, c in rows}


def _ledger(url: str) -> dict[tuple[str, str], tuple[int, Decimal]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tenant, model, count(*), sum(cost) FROM usage GROUP BY tenant, model"
        ).fetchall()
    return {(t, m): (int(n), Decimal(c)) for t, m, n, c in rows}


async def two_batches(
    storage: PostgresStorage, count: int, caught: type[BaseException],
    overrides: dict[int, dict[str, Any]] | None = None,
) -> dict[int, bool | BaseException]:
    """Rows 0 to count-1 recorded (each with its `overrides`): row 0 committed alone, the
    others queued while it commits, so they are the next batch, together. Each row's
    answer, or the `caught` error its caller got."""
    answers: dict[int, bool | BaseException] = {}
    extra = overrides or {}

    async def record(n: int) -> None:
        try:
            answers[n] = await storage.insert_usage(make_usage(n, T0, **extra.get(n, {})))
        except caught as err:
            answers[n] = err

    async with trio.open_nursery() as nursery:
        nursery.start_soon(record, 0)  # a batch alone
        await trio.testing.wait_all_tasks_blocked()
        for n in range(1, count):  # queued while it commits: the next batch, together
            nursery.start_soon(record, n)
    return answers


async def test_concurrent_rows_share_transactions_and_each_caller_gets_its_answer(
    postgres_url: str,
) -> None:
    storage = await opened(postgres_url, queue_rows=64)
    answers: dict[int, bool] = {}

    async def record(n: int) -> None:
        row = make_usage(n, T0 + timedelta(milliseconds=n), request_id=f"req_{n % 150}")
        answers[n] = await storage.insert_usage(row)

    try:
        async with trio.open_nursery() as nursery:
            for n in range(300):
                nursery.start_soon(record, n)
        assert await storage.usage_count() == 150
        for rid in range(150):  # exactly one of the two rows per request_id went in
            assert answers[rid] != answers[rid + 150]
        assert storage.writer.batches < 150  # rows shared transactions
        assert _rollup(postgres_url) == _ledger(postgres_url) == {
            ("t1", "gpt-4.1"): (150, Decimal("0.0000012345") * 150)
        }
    finally:
        await storage.close()


async def test_duplicates_in_one_batch_insert_once_and_count_once(postgres_url: str) -> None:
    storage = await opened(postgres_url)
    results: list[bool] = []

    async def record(row: UsageRecord) -> None:
        results.append(await storage.insert_usage(row))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(record, make_usage(0, T0, request_id="req_first"))  # a batch alone
            await trio.testing.wait_all_tasks_blocked()
            for n in range(1, 11):  # queued while it commits: the next batch, together
                nursery.start_soon(record, make_usage(n, T0, request_id="req_same"))
            # a new request_id, but the id of the row already committed: the INSERT skips it
            nursery.start_soon(record, make_usage(0, T0, request_id="req_other_same_id"))
        assert sorted(results) == [False] * 10 + [True] * 2
        assert storage.writer.batches == 2
        assert await storage.insert_usage(make_usage(99, T0, request_id="req_same")) is False
        assert await storage.usage_count() == 2
        assert _rollup(postgres_url) == {("t1", "gpt-4.1"): (2, Decimal("0.0000024690"))}
    finally:
        await storage.close()


async def test_two_writers_sharing_rollup_rows_in_opposite_orders_do_not_deadlock(
    postgres_url: str,
) -> None:
    """Each batch touches 12 rollup rows; one storage's batches list them in one order,
    the other's in the reverse one. Each writer locks them sorted, so neither waits on
    the other in a cycle (Postgres would abort one transaction: a lost batch)."""
    first, second = await opened(postgres_url), await opened(postgres_url)
    keys = [(f"t{t}", f"m{m}") for t in range(3) for m in range(4)]
    rng = random.Random(7)
    count = 0

    async def batch(storage: PostgresStorage, order: list[tuple[str, str]], round_: int) -> None:
        nonlocal count
        async with trio.open_nursery() as nursery:
            for tenant, model in order:
                count += 1
                row = make_usage(count, T0 + timedelta(minutes=round_ % 3), tenant=tenant,
                                 model=model, latency_ms=rng.randrange(1, 5000))  # fmt: skip
                nursery.start_soon(storage.insert_usage, row)

    try:
        for round_ in range(40):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(batch, first, keys, round_)
                nursery.start_soon(batch, second, keys[::-1], round_)
        assert first.writer.batches < 40 * 12 and second.writer.batches < 40 * 12
        ledger = _ledger(postgres_url)
        assert sum(n for n, _ in ledger.values()) == 2 * 40 * 12
        assert _rollup(postgres_url) == ledger
    finally:
        await first.close()
        await second.close()


async def test_close_commits_what_is_queued_and_then_refuses(postgres_url: str) -> None:
    storage = await opened(postgres_url)
    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(storage.insert_usage, make_usage(n, T0))
        await trio.testing.wait_all_tasks_blocked()
        await storage.close()
    with pytest.raises(RuntimeError, match="closed"):
        await storage.insert_usage(make_usage(99, T0))
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM usage").fetchone() == (20,)


async def test_a_row_the_database_refuses_fails_alone_and_its_batch_is_committed(
    postgres_url: str,
) -> None:
    """Two rows in a batch of 12 cannot be stored (a token count beyond BIGINT, refused
    by the server; a NUL in a text column, refused by the driver): the batch is committed
    again row by row, so their callers get the error and the other ten rows go in."""
    storage = await opened(postgres_url)
    bad = {4: {"input_tokens": 2**63}, 9: {"model": "gpt\x00-4.1"}}
    try:
        answers = await two_batches(storage, 13, psycopg.Error, bad)
        assert storage.writer.batches == 2
        assert isinstance(answers.pop(4), psycopg.errors.NumericValueOutOfRange)
        assert isinstance(answers.pop(9), psycopg.DataError)
        assert answers == {n: True for n in range(13) if n not in bad}
        with psycopg.connect(postgres_url) as conn:
            ids = [r[0] for r in conn.execute("SELECT request_id FROM usage ORDER BY at, id")]
        assert sorted(ids) == sorted(f"req_{n}" for n in range(13) if n not in bad)
        assert _rollup(postgres_url) == _ledger(postgres_url) == {
            ("t1", "gpt-4.1"): (11, Decimal("0.0000012345") * 11)
        }
    finally:
        await storage.close()


async def test_a_row_the_rollup_upserts_refuse_fails_alone_and_its_batch_is_committed(
    postgres_url: str,
) -> None:
    """The rollup upserts (sent together in one pipeline) refuse a batch whose token sum
    for one rollup row goes beyond BIGINT, though each ledger row fits: the batch is
    committed again row by row, so only the row that tips the sum over is refused (the
    second of the two big ones to be committed), and
    the rollups still equal the ledger."""
    storage = await opened(postgres_url)
    big = {2: {"input_tokens": 2**62}, 3: {"input_tokens": 2**62}}
    try:
        answers = await two_batches(storage, 6, psycopg.Error, big)
        assert storage.writer.batches == 2
        # whichever of the two big rows is committed second tips the sum over
        refused = [n for n in big if isinstance(answers[n], psycopg.errors.NumericValueOutOfRange)]
        assert len(refused) == 1
        assert answers == {n: True for n in range(6) if n not in refused} | {refused[0]: answers[refused[0]]}
        assert _rollup(postgres_url) == _ledger(postgres_url) == {
            ("t1", "gpt-4.1"): (5, Decimal("0.0000012345") * 5)
        }
        with psycopg.connect(postgres_url) as conn:
            tokens = conn.execute("SELECT sum(input_tokens) FROM usage_hourly_nokey").fetchone()
            ledger = conn.execute("SELECT sum(input_tokens) FROM usage").fetchone()
        assert tokens == ledger
    finally:
        await storage.close()


async def test_a_batch_failing_for_another_reason_fails_every_row_and_is_not_split(
    postgres_url: str,
) -> None:
    """A batch failing for the connection (here SQLSTATE 57P01, "terminating connection",
    raised once by a trigger when req_5 is inserted) is not retried row by row: each of
    its callers gets the 503, and none of its rows is in."""
    storage = await opened(postgres_url)
    inject(postgres_url, "usage", "57P01", times=1, when="NEW.request_id = 'req_5'")
    try:
        answers = await two_batches(storage, 13, StorageUnavailable)
        assert storage.writer.batches == 2
        assert answers.pop(0) is True
        assert all(isinstance(a, StorageUnavailable) for a in answers.values()), answers
        assert len(answers) == 12
        assert await storage.usage_count() == 1
    finally:
        await storage.close()


async def test_a_row_whose_parameters_raise_fails_alone_and_the_writer_keeps_running(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Making one row's parameters raises a Python error (not psycopg's), before
    anything is sent: that row's caller gets a psycopg DataError whose cause is the
    error, the other rows of its batch are committed, and the writer keeps taking rows.
    (Before, such an error escaped the writer task and took the process down.)"""
    from adapters.storage import pg_writer

    params = pg_writer._params

    def refusing(rows: Any) -> Any:
        if any(row[0] == "use_3" for row in rows):  # the id, the first column
            raise ArithmeticError("a value the statement cannot take")
        return params(rows)

    monkeypatch.setattr(pg_writer, "_params", refusing)
    storage = await opened(postgres_url)
    try:
        answers = await two_batches(storage, 6, psycopg.Error)
        refused = answers.pop(3)
        assert isinstance(refused, pg_writer.RowNotStorable) and isinstance(refused, psycopg.DataError)
        assert isinstance(refused.__cause__, ArithmeticError)
        assert answers == {n: True for n in range(6) if n != 3}
        assert await storage.insert_usage(make_usage(9, T0)) is True  # the writer still runs
        assert _rollup(postgres_url) == _ledger(postgres_url) == {
            ("t1", "gpt-4.1"): (6, Decimal("0.0000012345") * 6)
        }
    finally:
        await storage.close()


async def test_a_batch_writes_the_ledger_then_each_rollup_in_turn_each_in_key_order(
    postgres_url: str,
) -> None:
    """The batch is one statement whose parts Postgres may run in any order unless told:
    each rollup's upsert waits for the one before, so a batch touches (and locks) the
    ledger rows, then the hourly rollup, its bins, the daily, all-tenant and by-model
    rollups, each table's rows in code-point key order (Python's `sorted`, as before),
    on a first batch (inserts) and on a second (updates of the same rollup rows). A
    BEFORE trigger on each table logs the rows in the order they are written. (Without
    the gates Postgres ran the last rollup's upsert first.)"""
    from adapters.storage import codec, pg_batch_sql

    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE written (n serial PRIMARY KEY, tbl text, model text)")
        conn.execute(
            "CREATE FUNCTION log_written() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " INSERT INTO written (tbl, model) VALUES (TG_TABLE_NAME, NEW.model); RETURN NEW; END $$"
        )
    storage = await opened(postgres_url)
    with psycopg.connect(postgres_url) as conn:
        for table in ("usage", *pg_batch_sql.TABLES):
            conn.execute(f"CREATE TRIGGER log_{table} BEFORE INSERT OR UPDATE ON {table}"
                         " FOR EACH ROW EXECUTE FUNCTION log_written()")  # fmt: skip
    models = ["b", "B", "a", "A"]  # code-point order: A, B, a, b
    try:
        for round_ in range(2):
            recs = [make_usage(10 * round_ + i, T0, model=m) for i, m in enumerate(models)]
            answers = await storage._commit([(codec.postgres_row(r), r) for r in recs])
            assert answers == [True] * 4
            with psycopg.connect(postgres_url) as conn:
                log = conn.execute("SELECT tbl, model FROM written ORDER BY n").fetchall()
                conn.execute("DELETE FROM written")
            # an upsert that updates fires BEFORE INSERT, then BEFORE UPDATE: once a row here
            assert list(dict.fromkeys(log)) == [("usage", m) for m in models] + [
                (table, m) for table in pg_batch_sql.TABLES for m in sorted(models)
            ], round_
        assert _rollup(postgres_url) == _ledger(postgres_url)
    finally:
        await storage.close()


async def test_a_batch_is_one_statement_in_its_own_transaction_without_begin_or_commit(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's one statement is sent in autocommit (Postgres makes it a transaction
    by itself: two round trips fewer than BEGIN and COMMIT around it); the connection
    goes back to the pool out of autocommit, so the next operation is a transaction
    block again."""
    storage = await opened(postgres_url, pool_size=1)
    opened_blocks: list[bool] = []
    transaction = psycopg.Connection.transaction

    def spy(self: psycopg.Connection[Any], *args: Any, **kwargs: Any) -> Any:
        opened_blocks.append(self.autocommit)
        return transaction(self, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "transaction", spy)
    try:
        answers = await two_batches(storage, 5, psycopg.Error)
        assert answers == {n: True for n in range(5)}
        assert storage.writer.batches == 2 and opened_blocks == []
        with storage._pool.connection() as conn:  # the pool's one connection
            assert conn.autocommit is False  # given back as it came
        assert _rollup(postgres_url) == _ledger(postgres_url)
    finally:
        await storage.close()


async def test_a_batch_goes_on_the_writers_own_connection_without_a_worker_thread(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the writer's connection is open (its connect is the one thread call), a batch
    takes no worker thread and no pool connection: it is sent from the Trio thread, on a
    statement prepared once for its size."""
    storage = await opened(postgres_url)
    threads: list[Any] = []
    run_sync = trio.to_thread.run_sync

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        threads.append(fn)
        return await run_sync(fn, *args, **kwargs)

    try:
        assert await storage.insert_usage(make_usage(0, T0)) is True  # opens the connection
        monkeypatch.setattr(trio.to_thread, "run_sync", counting)
        answers = await two_batches(storage, 5, psycopg.Error)  # a batch of 1, then of 4
        assert answers == {n: True for n in range(1, 5)} | {0: False}  # row 0 was in already
        answers = await two_batches(storage, 5, psycopg.Error)
        assert threads == []
        assert storage._line.statements == 5 and storage._line._prepared == {1, 4}
        assert _rollup(postgres_url) == _ledger(postgres_url)
    finally:
        await storage.close()


async def test_the_writers_connection_lost_fails_its_batch_and_the_next_reconnects(
    postgres_url: str,
) -> None:
    """The writer's backend terminated between batches: the next batch fails with
    `StorageUnavailable` (nothing of it is in), the one after opens a new connection
    and goes in."""
    storage = await opened(postgres_url)
    try:
        assert await storage.insert_usage(make_usage(0, T0)) is True
        conn = storage._line._conn
        assert conn is not None
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        with pytest.raises(StorageUnavailable):
            await storage.insert_usage(make_usage(1, T0))
        assert await storage.insert_usage(make_usage(1, T0)) is True
        assert storage._line._conn is not conn
        assert await storage.usage_count() == 2
    finally:
        await storage.close()
