"""The rollups of the ledger on SQLite and Postgres: hourly without the key
(adapters/storage/rollup.py, migration 009), daily with the key and hourly for all
tenants (adapters/storage/rollup_wide.py, migrations 011 and 012), and which one each
part of a read comes from (adapters/storage/sources.py).

- Equality (Hypothesis): for any ledger rows written through `insert_usage` and any
  window (whole days, whole hours, or neither), filter (the key's too), bucket and
  grouping (by key too), `usage_series`, `usage_histogram` and `usage_totals` (whole days
  from the daily rollup, whole hours from an hourly one, the rest from the ledger) equal
  the sums of the raw rows computed in Python (`core.usage.aggregate` for the totals),
  and the raw-ledger SQL over the whole window; money exactly.
- The writer adds each inserted row once to every rollup (a retried `request_id` adds
  nothing; SQLite writes them behind the ledger, test_rollup_behind.py); each rollup migration's fill gives the same
  tables as the writer, and the keyed tables of migration 003 are gone.
- `sources.plan` covers a window exactly once, each part from a source that can answer
  it, coarsest first; a dropped rollup table fails reads and `migrate`, never gives a
  silently smaller answer.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal
from typing import Any

import pytest
import trio
from attrs import frozen
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.storage import ledger, open_storage, rollup, rollup_wide, sources
from adapters.storage.base import Storage
from adapters.storage.ledger import LedgerFilter, SeriesRow
from adapters.storage.migrations import migrations
from adapters.storage.records import UsageRecord
from core import percentiles
from core.model import Usage
from core.usage import DIMENSIONS, LedgerRow, aggregate
from tests.adapters.test_storage import make_usage

T0 = datetime(2030, 1, 1, tzinfo=UTC)
EPOCH = timedelta(days=5)  # each example's rows and windows lie in its own 5 days
SPAN_US = 50 * 3600 * 10**6  # rows within 50 hours of the epoch's start


@frozen
class Row:
    offset_us: int
    tenant: str
    project: str
    model: str
    provider: str | None
    status: str
    tokens: tuple[int, int, int, int]
    cost_units: int  # 1e-10 dollars
    latency_ms: int | None
    ttft_ms: int | None


rows_strategy = st.lists(
    st.builds(
        Row,
        offset_us=st.one_of(st.integers(0, SPAN_US), st.integers(0, 50).map(lambda h: h * 3600 * 10**6)),
        tenant=st.sampled_from(["a", "b"]),
        project=st.sampled_from(["p1", "p2"]),
        model=st.sampled_from(["m1", "m2"]),
        provider=st.sampled_from([None, "p", "q"]),
        status=st.sampled_from(["ok", "ok", "upstream_error"]),
        tokens=st.tuples(*[st.integers(0, 5000)] * 4),
        cost_units=st.integers(0, 10**13),
        latency_ms=st.one_of(st.none(), st.integers(0, 700_000)),
        ttft_ms=st.one_of(st.none(), st.integers(0, 5_000)),
    ),
    max_size=40,
)
# A window: start and length in microseconds (sometimes whole hours or days), within the
# epoch: with rows over 50 hours, a window may hold two whole days.
HOUR_US = 3600 * 10**6
edge_us = st.one_of(
    st.integers(0, SPAN_US), st.integers(0, 52).map(lambda h: h * HOUR_US),
    st.integers(0, 3).map(lambda d: d * 24 * HOUR_US),
)  # fmt: skip
windows = st.tuples(edge_us, edge_us).map(sorted).filter(lambda w: w[0] < w[1])
filters = st.fixed_dictionaries({
    "tenant": st.sampled_from([None, "a"]),
    "project": st.sampled_from([None, None, "p1"]),
    "key_id": st.sampled_from([None, None, "key_a0"]),
    "model": st.sampled_from([None, "m1"]),
    "provider": st.sampled_from([None, "p"]),
    "status": st.sampled_from([None, "ok"]),
})  # fmt: skip
buckets = st.sampled_from(["hour", "day"])
groupings = st.sampled_from([None, "model", "provider", "status", "tenant", "key_id", "deployment", "project"])
totals_by = st.lists(st.sampled_from(sorted(DIMENSIONS)), max_size=3, unique=True).map(tuple)


@pytest.fixture
def epochs() -> Iterator[int]:
    return itertools.count()


def record(base: datetime, n: int, row: Row) -> UsageRecord:
    return make_usage(
        n, base + timedelta(microseconds=row.offset_us), tenant=row.tenant, project=row.project, model=row.model,
        provider=row.provider, deployment=None if row.provider is None else f"{row.provider}/{row.model}",
        status=row.status, input_tokens=row.tokens[0], output_tokens=row.tokens[1],
        cached_input_tokens=row.tokens[2], cache_write_tokens=row.tokens[3],
        cost=Decimal(row.cost_units).scaleb(-10), latency_ms=row.latency_ms, ttft_ms=row.ttft_ms,
        key_id=f"key_{row.tenant}{n % 2}", request_id=f"req_{base:%Y%m%d}_{n}",
        id=f"use_{base:%Y%m%d}_{n}",
    )  # fmt: skip


def matches(rec: UsageRecord, f: LedgerFilter) -> bool:
    if not f.start <= rec.at < f.end:
        return False
    return all(getattr(f, c) is None or getattr(rec, c) == getattr(f, c) for c in ledger.FILTER_COLUMNS)


def bucket_of(rec: UsageRecord, bucket: str) -> str:
    hour = rollup.hour_of(rec.at)
    return hour if bucket == "hour" else hour[:10]


def expected_series(recs: list[UsageRecord], f: LedgerFilter, bucket: str, by: str | None) -> list[SeriesRow]:
    sums: dict[tuple[str, str], list[Any]] = {}
    for rec in (r for r in recs if matches(r, f)):
        key = (bucket_of(rec, bucket), "" if by is None else getattr(rec, by) or "")
        adds = [1, int(rec.status != "ok"), rec.input_tokens, rec.output_tokens,
                rec.cached_input_tokens, rec.cache_write_tokens, rec.cost]  # fmt: skip
        seen = sums.get(key)
        sums[key] = adds if seen is None else [a + b for a, b in zip(seen, adds, strict=True)]
    return [SeriesRow(b, g, *v) for (b, g), v in sorted(sums.items())]


def expected_histogram(recs: list[UsageRecord], f: LedgerFilter, bucket: str, metric: str) -> list[tuple[str, int, int]]:
    counts: dict[tuple[str, int], int] = {}
    for rec in (r for r in recs if matches(r, f)):
        value = getattr(rec, metric)
        if value is not None:
            key = (bucket_of(rec, bucket), percentiles.bin_of(value))
            counts[key] = counts.get(key, 0) + 1
    return [(b, i, n) for (b, i), n in sorted(counts.items())]


def ledger_row(rec: UsageRecord) -> LedgerRow:
    return LedgerRow(
        at=rec.at, tenant=rec.tenant, project=rec.project, key_id=rec.key_id, model=rec.model,
        provider=rec.provider or "", deployment=rec.deployment or "",
        usage=Usage(rec.input_tokens, rec.output_tokens, rec.cached_input_tokens,
                    rec.cache_write_tokens, rec.reasoning_tokens),
        cost=rec.cost, status=rec.status, latency_ms=rec.latency_ms, ttft_ms=rec.ttft_ms,
    )  # fmt: skip


@settings(max_examples=40)
@given(rows=rows_strategy, window=windows, filt=filters, bucket=buckets, by=groupings, dims=totals_by)
async def test_series_histograms_and_totals_equal_the_raw_rows(
    storage_url: str, epochs: Iterator[int], rows: list[Row], window: tuple[int, int],
    filt: dict[str, str | None], bucket: Any, by: str | None, dims: tuple[str, ...],
) -> None:  # fmt: skip
    # One database for every example (each in its own epoch), opened per example.
    storage = open_storage(storage_url)
    await storage.migrate()
    try:
        await check_equal(storage, T0 + next(epochs) * EPOCH, rows, window, filt, bucket, by, dims)
    finally:
        await storage.close()


async def check_equal(
    storage: Storage, base: datetime, rows: list[Row], window: tuple[int, int],
    filt: dict[str, str | None], bucket: Any, by: str | None, dims: tuple[str, ...],
) -> None:  # fmt: skip
    recs = [record(base, n, row) for n, row in enumerate(rows)]
    for rec in recs:
        assert await storage.insert_usage(rec)
    f = LedgerFilter(start=base + timedelta(microseconds=window[0]),
                     end=base + timedelta(microseconds=window[1]), **filt)  # fmt: skip
    got = await storage.usage_series(f, bucket, by)
    assert got == expected_series(recs, f, bucket, by)
    # The same as the raw ledger's SQL over the whole window (the path before the rollup).
    raw = [ledger.series_row(r) for r in await storage._fetch(  # type: ignore[attr-defined]
        ledger.series_query(storage.dialect, f, bucket, by))]  # type: ignore[attr-defined]  # fmt: skip
    assert got == ledger.merge_series(raw)
    for metric in rollup.METRICS:
        hist = await storage.usage_histogram(f, bucket, metric)  # type: ignore[arg-type]
        assert [(b, i, n) for b, counts in hist.items() for i, n in enumerate(counts) if n] == \
            expected_histogram(recs, f, bucket, metric)
        assert all(len(counts) == percentiles.BINS and any(counts) for counts in hist.values())
    # /v1/usage's totals: the same as core.usage.aggregate of the raw rows.
    totals = await storage.usage_totals(f, dims)
    assert totals == aggregate([ledger_row(r) for r in recs if matches(r, f)], dims)


ORDERS = {
    rollup.HOURLY: rollup.KEY_COLUMNS, rollup.BINS: rollup.BIN_COLUMNS,
    **{w.table: w.keys for w in rollup_wide.TABLES},
}  # fmt: skip


async def rollup_tables(storage: Storage) -> dict[str, list[tuple[Any, ...]]]:
    """Every rollup table's rows, in key order."""
    out = {}
    for table, keys in ORDERS.items():
        rows = await storage._fetch((f"SELECT * FROM {table} ORDER BY {', '.join(keys)}", []))  # type: ignore[attr-defined]
        out[table] = [tuple(r) for r in rows]
    return out


def some_rows(base: datetime, n: int = 60) -> list[UsageRecord]:
    out = []
    for i in range(n):
        row = Row(offset_us=i * 37 * 60 * 10**6 + i, tenant="ab"[i % 2], project=f"p{i % 3 // 2}", model=f"m{i % 3}",
                  provider=[None, "p", "q"][i % 3], status="ok" if i % 4 else "upstream_error",
                  tokens=(i, 2 * i, i % 5, i % 7), cost_units=i * 123456789 + 1,
                  latency_ms=None if i % 5 == 0 else i * 997, ttft_ms=None if i % 3 == 0 else i * 13)  # fmt: skip
        out.append(record(base, i, row))
    return out


async def test_a_retried_row_adds_nothing_and_the_rollup_is_what_the_writer_added(storage: Storage) -> None:
    recs = some_rows(T0)
    for rec in recs:
        assert await storage.insert_usage(rec)
    before = await rollup_tables(storage)
    assert not await storage.insert_usage(recs[3])  # the same request_id again
    assert await rollup_tables(storage) == before
    hourly, bins = before[rollup.HOURLY], before[rollup.BINS]
    assert sum(r[len(rollup.KEY_COLUMNS)] for r in hourly) == len(recs)
    timed = sum((r.latency_ms is not None) + (r.ttft_ms is not None) for r in recs)
    assert sum(r[-1] for r in bins) == timed
    for wide in rollup_wide.TABLES:  # every row once: its requests, and one bin per metric
        rows = before[wide.table]
        assert sum(r[len(wide.keys)] for r in rows) == len(recs), wide.table
        assert sum(sum(r[-len(rollup_wide.BIN_COLUMNS):]) for r in rows) == timed, wide.table


@pytest.mark.parametrize("name", rollup.MIGRATIONS)
async def test_batches_of_many_keys_and_bin_sets_add_up_as_the_fills_say(storage: Storage, name: str) -> None:
    """Rows submitted at once share batches (Postgres: one multi-row upsert a table per
    batch, naming the union of the bin columns its keys add to, 0 for a key that adds
    nothing there): the rollups still equal what the migrations' fills make of the ledger."""
    recs = some_rows(T0) + some_rows(T0 + timedelta(hours=3), 45)
    async with trio.open_nursery() as nursery:
        for rec in recs:
            nursery.start_soon(storage.insert_usage, rec)
    assert storage.writer.batches < len(recs) / 2  # type: ignore[attr-defined]  # rows shared batches
    written = await rollup_tables(storage)
    backend = "sqlite" if storage.dialect is ledger.SQLITE else "postgres"  # type: ignore[attr-defined]
    fill = rollup.backfill(backend, name)
    filled = {s.split()[2] for s in fill}

    def rebuild(c: Any) -> None:
        for table in filled:
            c.execute(f"DELETE FROM {table}")
        for statement in fill:
            c.execute(statement)

    await storage._run(rebuild)  # type: ignore[attr-defined]
    rebuilt = await rollup_tables(storage)
    assert all(rebuilt[t] == written[t] and rebuilt[t] for t in filled)


@pytest.mark.parametrize("name", rollup.MIGRATIONS)
async def test_each_rollup_migration_fill_gives_what_the_writer_gives(storage: Storage, name: str) -> None:
    for rec in some_rows(T0) + some_rows(T0 + timedelta(days=1, hours=5), 30):
        await storage.insert_usage(rec)
    written = await rollup_tables(storage)
    backend = "sqlite" if storage.dialect is ledger.SQLITE else "postgres"  # type: ignore[attr-defined]
    fill = rollup.backfill(backend, name)
    filled = [s.split()[2] for s in fill]  # INSERT INTO <table> ...
    assert len(fill) == (3 if name == rollup.MIGRATION else 1)  # 009: sums and two histograms

    def rebuild(c: Any) -> None:
        for table in set(filled):
            c.execute(f"DELETE FROM {table}")
        for statement in fill:
            c.execute(statement)

    await storage._run(rebuild)  # type: ignore[attr-defined]
    rebuilt = await rollup_tables(storage)
    assert rebuilt == written
    assert all(rebuilt[t] for t in filled)


async def test_migration_009_on_an_upgraded_database_fills_the_rollup_and_drops_the_keyed_one(
    storage: Storage,
) -> None:
    for rec in some_rows(T0):
        await storage.insert_usage(rec)
    written = await rollup_tables(storage)
    backend = "sqlite" if storage.dialect is ledger.SQLITE else "postgres"  # type: ignore[attr-defined]
    (keyed,) = [m for m in migrations(backend) if m.name.endswith("_usage_hourly.sql")]
    (nokey,) = [m for m in migrations(backend) if m.name.endswith(rollup.MIGRATION)]

    def before_009(c: Any) -> None:  # the database as a gateway without 009 left it
        c.execute(f"DELETE FROM schema_version WHERE version = {nokey.version}")
        for table in reversed(rollup.TABLES):
            c.execute(f"DROP TABLE {table}")
        for statement in keyed.statements():
            if statement.startswith("CREATE"):
                c.execute(statement)

    await storage._run(before_009)  # type: ignore[attr-defined]
    await storage.migrate()  # applies 009 alone: fills from the ledger's rows
    assert (await rollup_tables(storage))[rollup.HOURLY] == written[rollup.HOURLY]
    assert (await rollup_tables(storage))[rollup.BINS] == written[rollup.BINS]
    present = await storage._fetch((  # type: ignore[attr-defined]
        "SELECT count(*) FROM schema_version WHERE version = 9", []))  # fmt: skip
    assert present == [(1,)]
    for table in ("usage_hourly", "usage_hourly_bins"):
        with pytest.raises(storage.errors):  # type: ignore[attr-defined]
            await storage._fetch((f"SELECT count(*) FROM {table}", []))  # type: ignore[attr-defined]


FROM_A_ROLLUP = "_usage_hourly_model.sql"  # the one rollup filled from another rollup


def test_the_backfill_bins_are_core_percentiles_bins() -> None:
    for backend in ("sqlite", "postgres"):
        for name in rollup.MIGRATIONS:
            (migration,) = [m for m in migrations(backend) if m.name.endswith(name)]
            for metric in rollup.METRICS:
                if name == FROM_A_ROLLUP:  # 014: filled from 012's bin columns, summed
                    for column in rollup_wide.bin_columns(metric):
                        assert f"sum({column})" in migration.sql, (backend, name, column)
                else:
                    assert ledger.bin_case(metric) in migration.sql, (backend, name, metric)
                if name != rollup.MIGRATION:  # a column per bin, and no more
                    for column in rollup_wide.bin_columns(metric):
                        assert f" {column} " in migration.sql, (backend, name, column)
                    assert f"{metric}_b{percentiles.BINS} " not in migration.sql


USED = st.lists(st.sampled_from(sorted({*ledger.FILTER_COLUMNS, *ledger.GROUP_COLUMNS})), max_size=3)


@given(start=st.integers(0, 80 * HOUR_US), length=st.integers(0, 80 * HOUR_US),
       used=USED, grain=st.sampled_from(["hour", "day"]))  # fmt: skip
def test_plan_covers_the_window_once_each_part_from_a_source_that_answers(
    start: int, length: int, used: list[str], grain: Any
) -> None:
    a = T0 + timedelta(minutes=7) + timedelta(microseconds=start)
    b = a + timedelta(microseconds=length)
    parts = sources.plan(a, b, used, grain)
    covered = a
    for part in sorted(parts, key=lambda p: p.start):
        assert part.start == covered and part.start < part.end
        covered = part.end
        if part.source is None:
            continue
        assert sources.answers(part.source, used, grain)
        assert sources.floor(part.start, part.source.grain) == part.start  # whole periods
        assert sources.floor(part.end, part.source.grain) == part.end
    assert covered == (b if a < b else a)
    # Coarsest first: no ledger part holds a whole period of a source that answers.
    for part in parts:
        if part.source is None:
            for source in sources.ROLLUPS:
                if sources.answers(source, used, grain):
                    assert sources.split(part.start, part.end, source.grain)[0] is None


def test_plan_picks_the_daily_rollup_for_whole_days_and_the_smallest_hourly_one() -> None:
    a, b = T0 + timedelta(hours=20, minutes=30), T0 + timedelta(days=3, hours=2, minutes=10)
    got = [(p.source and p.source.table, p.start, p.end) for p in sources.plan(a, b, ["model"], "day")]
    h = timedelta(hours=1)
    assert sorted(got, key=lambda g: g[1]) == [
        (None, a, T0 + 21 * h),
        (sources.HOURLY_MODEL.table, T0 + 21 * h, T0 + 24 * h),
        (sources.DAILY.table, T0 + 24 * h, T0 + 72 * h),
        (sources.HOURLY_MODEL.table, T0 + 72 * h, T0 + 74 * h),
        (None, T0 + 74 * h, b),
    ]
    tenant = {p.source and p.source.table for p in sources.plan(a, b, ["tenant"], "day")}
    assert tenant == {None, sources.HOURLY.table, sources.DAILY.table}
    by_key_hourly = sources.plan(a, b, ["key_id"], "hour")
    assert [(p.source, p.start, p.end) for p in by_key_hourly] == [(None, a, b)]
    by_key_daily = {p.source and p.source.table for p in sources.plan(a, b, ["key_id"], "day")}
    assert by_key_daily == {None, sources.DAILY.table}
    hourly = {p.source and p.source.table for p in sources.plan(a, b, ["status"], "hour")}
    assert hourly == {None, sources.HOURLY_MODEL.table}
    by_project = {p.source and p.source.table for p in sources.plan(a, b, ["model", "project"], "hour")}
    assert by_project == {None, sources.HOURLY_ALL.table}


@pytest.mark.parametrize("table", sources.TABLES)
async def test_a_dropped_rollup_table_fails_reads_and_migrate(storage_url: str, table: str) -> None:
    storage = open_storage(storage_url)
    await storage.migrate()
    try:
        for rec in some_rows(T0):
            assert await storage.insert_usage(rec)
        await storage._run(lambda c: c.execute(f"DROP TABLE {table}"))  # type: ignore[attr-defined]
        window = LedgerFilter(start=T0 - timedelta(days=2), end=T0 + timedelta(days=3))
        day = {sources.DAILY.table}
        reads = [
            lambda: storage.usage_series(window, "day" if table in day else "hour", None),
            lambda: storage.usage_histogram(window, "day" if table in day else "hour", "latency_ms"),
            lambda: storage.usage_totals(window, ("day",) if table in day else ("hour",)),
        ]
        if table == sources.HOURLY_ALL.table:  # all tenants' hours by project
            project = LedgerFilter(start=window.start, end=window.end, project="p0")
            reads = [lambda: storage.usage_series(window, "hour", "project"),
                     lambda: storage.usage_histogram(project, "hour", "latency_ms")]  # fmt: skip
        if table == rollup.HOURLY:  # the per-tenant hourly rollup: a read on one tenant
            tenant = LedgerFilter(start=window.start, end=window.end, tenant="a")
            reads = [lambda: storage.usage_series(tenant, "hour", None)]
        if table == rollup.BINS:
            tenant = LedgerFilter(start=window.start, end=window.end, tenant="a")
            reads = [lambda: storage.usage_histogram(tenant, "hour", "ttft_ms")]
        for read in reads:
            with pytest.raises(storage.errors):  # type: ignore[attr-defined]
                await read()
        with pytest.raises(sources.RollupMissing, match=table):
            await storage.migrate()
    finally:
        await storage.close()


@pytest.mark.parametrize("name", [m for m in rollup.MIGRATIONS if m != rollup.MIGRATION])
async def test_bin_sets_beyond_the_sparse_limit_are_written_whole_and_add_up_the_same(
    storage: Storage, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's writer keeps SQL for at most SPARSE_SETS sets of bin columns per table;
    any other set is written with every bin column. With the limit at 2, most rows of
    `some_rows` (latencies over many bins) take that path: the rollups must still be what
    the migrations' fills make of the same ledger, and the SQL kept stays bounded."""
    monkeypatch.setattr(rollup_wide, "SPARSE_SETS", 2)
    recs = some_rows(T0) + some_rows(T0 + timedelta(hours=7), 40)
    for rec in recs:
        await storage.insert_usage(rec)
    for upserts in getattr(storage, "_wide_upserts", ()):
        assert len(upserts._sql) <= 3  # two sparse sets and EVERY_BIN
    written = await rollup_tables(storage)
    backend = "sqlite" if storage.dialect is ledger.SQLITE else "postgres"  # type: ignore[attr-defined]
    fill = rollup.backfill(backend, name)
    table = fill[0].split()[2]

    def rebuild(c: Any) -> None:
        c.execute(f"DELETE FROM {table}")
        for statement in fill:
            c.execute(statement)

    await storage._run(rebuild)  # type: ignore[attr-defined]
    assert (await rollup_tables(storage))[table] == written[table]


money = st.decimals(min_value=0, max_value=Decimal(10) ** 30, places=10, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(held=money, added=st.lists(money, min_size=1, max_size=5))
def test_sqlites_money_add_is_exact_as_text(held: Decimal, added: list[Decimal]) -> None:
    """What SQLite's rollup upserts add a cost with (`rollup.MONEY_ADD`): text with exactly
    10 places, never rounded, whatever it was added to."""
    text = rollup.money_text(held)
    for a in added:
        text = rollup.money_add(text, rollup.money_text(a))
    exact = held
    for a in added:
        exact = exact.fma(1, a, Context(prec=100))  # no rounding at 100 digits
    assert text == f"{exact:.10f}" and Decimal(text) == exact
