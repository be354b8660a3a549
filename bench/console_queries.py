"""`make bench-console`: how long the console's usage page takes on a large ledger.

Fills a fresh SQLite database (or, with `--database-url postgresql://...`, a Postgres
database you created for it; its `usage` table must be empty, unless `--reuse`) with
`--rows` ledger rows (default 1,000,000) spread over 90 days, 20 tenants, 200 keys and 6
models, then builds the rollups from them (the fills of migrations 009, 011, 012 and 014; the rows bypass
the ledger writer, which keeps them; on Postgres then VACUUM ANALYZE, as autovacuum
would). `--reuse` keeps a database an earlier run filled (the fill of 1,000,000 rows
takes minutes on a loaded machine), e.g. `--reuse --database-url sqlite:///bench.db`;
`--window` times only some windows.

Then times the Usage page of one refresh, as the gateway serves it: its three reads
(`Storage.usage_series` by model and the two `usage_histogram`s), the answer
(`server.routes.insights.series_answer`: percentiles per bucket, points) and its JSON,
over windows of 1, 7 and 30 days (per hour; 30 days per day too), for all tenants
(admin) and for one tenant, each for all keys and for one key; plus one Requests page
(`ledger_page`, 50 rows) and for one tenant `/v1/usage`'s totals by day and model.

Each page is timed in the same run four ways: as served; with main's code before the
console task (`console_before`: its Python, the rollups without migration 014's, and
on Postgres 009's tenant indexes instead of 014's covering ones, put back after); with the hourly rollup of migration 009 alone; on the ledger alone.
`--keys` (default 200) is how many keys the rows come from: a rollup holds one row per
period and value of its key columns, so how much smaller than the ledger it is depends
on how many rows those send per period. Each timing is the median of `--repeat` runs,
after one untimed run.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import trio
from attrs import evolve

from adapters.storage import codec, ledger, open_storage, rollup, rollup_behind, sources
from adapters.storage.base import Storage
from adapters.storage.ledger import LedgerFilter
from adapters.storage.migrations import migrations
from adapters.storage.records import UsageRecord
from bench import console_before
from core.model import Usage
from core.usage import LedgerRow, aggregate
from server import json_codec
from server.routes import insights

MODELS = ("gpt-4o-mini", "gpt-4.1", "gpt-4o", "claude-3.5-haiku", "claude-3.5-sonnet", "mock-fast")
END = datetime(2026, 6, 1, tzinfo=UTC)
SPAN_S = 90 * 86400


def rows(n: int, keys: int) -> Any:
    """Rows in time order, as a ledger is written (appended as requests end), from `keys`
    keys in turn (key k belongs to tenant k mod 20 and project k mod 7, as a key has one
    tenant and one project)."""
    draw = random.Random(42)
    start = END - timedelta(seconds=SPAN_S)
    for i in range(n):
        model = MODELS[i % len(MODELS)]
        k = i % keys
        yield UsageRecord(
            id=f"use_{i:09d}", request_id=f"req_{i:09d}",
            at=start + timedelta(seconds=SPAN_S * (i + draw.random()) / n),
            tenant=f"t{k % 20}", project=f"p{k % 7}", key_id=f"key_{k}", endpoint="chat",
            model=model, provider="anthropic" if model.startswith("claude") else "openai",
            deployment=f"x/{model}", input_tokens=draw.randrange(5, 2000),
            output_tokens=draw.randrange(1, 800), cached_input_tokens=0, cache_write_tokens=0,
            reasoning_tokens=0, cost=Decimal(draw.randrange(1, 10**7)).scaleb(-10),
            price_version="default", status="ok" if draw.random() > 0.02 else "error",
            error_code=None, latency_ms=draw.randrange(5, 4000), ttft_ms=draw.randrange(5, 900),
            attempts=1, stream=bool(i % 2),
        )


def fill(url: str, n: int, keys: int) -> None:
    cols = codec.columns(UsageRecord)
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        sql = f"INSERT INTO usage ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        batch: list[tuple[Any, ...]] = []
        for r in rows(n, keys):
            batch.append(codec.sqlite_row(r))
            if len(batch) == 50_000:
                conn.executemany(sql, batch)
                batch.clear()
        conn.executemany(sql, batch)
        conn.commit()
        conn.execute("ANALYZE")
        conn.close()
        return
    with psycopg.connect(url, autocommit=True) as pg:
        with pg.cursor() as cur, cur.copy(f"COPY usage ({', '.join(cols)}) FROM STDIN") as copy:
            for r in rows(n, keys):
                copy.write_row(codec.postgres_row(r))
        pg.execute("ANALYZE usage")


def roll_up(url: str) -> dict[str, int]:
    """Build the rollups of the rows `fill` wrote behind the writer (the rollup
    migrations' fills); the number of rows in each rollup table."""
    tables = sources.TABLES
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        for statement in rollup.backfill_all("sqlite"):
            conn.execute(statement)
        conn.execute(rollup_behind.AT_LEDGER_END)  # they hold every row: none is added again
        conn.commit()
        conn.execute("ANALYZE")
        counts = {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables}
        conn.close()
        return counts
    with psycopg.connect(url, autocommit=True) as pg:
        for statement in rollup.backfill_all("postgres"):
            pg.execute(statement.encode())
        counts = {}
        for table in tables:  # as autovacuum would: index-only scans need the visibility map
            pg.execute(f"VACUUM ANALYZE {table}".encode())
            row = pg.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
            counts[table] = int(row[0]) if row else 0
        return counts


@asynccontextmanager
async def main_schema(url: str, fetch: Any) -> AsyncIterator[Any]:
    """Queries run (through `fetch`, the storage's own path) on the indexes main had: on
    Postgres migration 014's two covering indexes are replaced by 009's for the while,
    then put back (SQLite's 014 changed no index)."""
    if url.startswith("sqlite:///"):
        yield fetch
        return
    (migration,) = [m for m in migrations("postgres") if m.version == 14]
    ours = [s for s in migration.statements() if s.startswith(("DROP INDEX", "CREATE INDEX"))]
    with psycopg.connect(url, autocommit=True) as pg:
        try:
            for statement in MAIN_INDEXES:
                pg.execute(statement.encode())
            yield fetch
        finally:
            for statement in (*ours, "ANALYZE usage_hourly_nokey", "ANALYZE usage_hourly_nokey_bins"):
                pg.execute(statement.encode())


MAIN_INDEXES = (  # Postgres: migration 009's tenant indexes, which 014 replaces
    "DROP INDEX usage_hourly_nokey_tenant",
    "CREATE INDEX usage_hourly_nokey_tenant ON usage_hourly_nokey (tenant, hour)",
    "DROP INDEX usage_hourly_nokey_bins_tenant",
    "CREATE INDEX usage_hourly_nokey_bins_tenant ON usage_hourly_nokey_bins (tenant, hour)",
    "ANALYZE usage_hourly_nokey", "ANALYZE usage_hourly_nokey_bins",
)  # fmt: skip
MAIN_ROLLUPS = (sources.DAILY, sources.HOURLY_ALL, sources.HOURLY)  # before migration 014
BEFORE = (sources.HOURLY,)  # the rollups before migrations 011 and 012
LEDGER_ONLY: tuple[sources.Source, ...] = ()


async def timed(repeat: int, fn: Any) -> float:
    """The median of `repeat` runs of `fn`, after one run that warms the caches."""
    await fn()
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs) * 1000


def ledger_row(rec: UsageRecord) -> LedgerRow:
    """A row as `/v1/usage` summed it in Python before `usage_totals`."""
    return LedgerRow(
        at=rec.at, tenant=rec.tenant, project=rec.project, key_id=rec.key_id, model=rec.model,
        provider=rec.provider or "", deployment=rec.deployment or "",
        usage=Usage(rec.input_tokens, rec.output_tokens, rec.cached_input_tokens,
                    rec.cache_write_tokens, rec.reasoning_tokens),
        cost=rec.cost, status=rec.status, latency_ms=rec.latency_ms, ttft_ms=rec.ttft_ms,
    )  # fmt: skip


def counts_of(url: str) -> dict[str, int]:
    """The rows in the ledger and in each rollup table."""
    tables = ("usage", *sources.TABLES)
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        found = {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables}
        conn.close()
        return found
    with psycopg.connect(url, autocommit=True) as pg:
        found = {}
        for table in tables:
            row = pg.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
            found[table] = int(row[0]) if row else 0
        return found


async def prepare(url: str, n: int, keys: int, reuse: bool) -> None:
    """Fill the ledger and build its rollups; with `reuse`, a database that already holds
    `n` ledger rows (from an earlier run with the same `--rows` and `--keys`) is kept."""
    if reuse:
        held = counts_of(url)
        if held["usage"] == n:
            print("reused: " + ", ".join(f"{t} {c:,}" for t, c in held.items()))
            if not url.startswith("sqlite:///"):  # indexes a migration added since
                with psycopg.connect(url, autocommit=True) as pg:
                    for table in sources.TABLES:
                        pg.execute(f"VACUUM ANALYZE {table}".encode())
            return
        if held["usage"]:
            raise SystemExit(f"--reuse: the database holds {held['usage']:,} ledger rows, not {n:,}")
    t0 = time.perf_counter()
    fill(url, n, keys)
    print(f"filled {n:,} rows in {time.perf_counter() - t0:.1f} s ({url.split(':', 1)[0]})")
    t0 = time.perf_counter()
    counts = roll_up(url)
    print(f"rolled up in {time.perf_counter() - t0:.1f} s: "
          + ", ".join(f"{t} {c:,}" for t, c in counts.items()))  # fmt: skip


WINDOWS = ((1, "hour"), (7, "hour"), (30, "hour"), (30, "day"))  # (days, bucket) timed


async def measure(
    url: str, n: int, repeat: int, keys: int, reuse: bool = False,
    windows: tuple[tuple[int, str], ...] = WINDOWS,
) -> None:  # fmt: skip
    storage: Storage = open_storage(url)
    await storage.migrate()
    d: ledger.Dialect = storage.dialect  # type: ignore[attr-defined]
    fetch = storage._fetch  # type: ignore[attr-defined]
    if not url.startswith("sqlite:///"):
        run = storage._run  # type: ignore[attr-defined]

        async def fetch(query: Any) -> list[tuple[Any, ...]]:
            """The storage's own path, never prepared: psycopg prepares a query after its
            5th run on a connection (generic plans), so the columns timed later would
            run on other plans than the first."""
            sql, args = query
            rows: list[tuple[Any, ...]] = await run(lambda c: c.execute(sql, args, prepare=False).fetchall())
            return rows

    await prepare(url, n, keys, reuse)

    async def page(f: LedgerFilter, bucket: Any, rollups: tuple[sources.Source, ...], get: Any = fetch) -> None:
        """The Usage page as served: its three reads from `rollups` and the ledger, the
        answer and its JSON."""
        rows = ledger.merge_series([ledger.series_row(r) for query in ledger.series_queries(
            d, f, bucket, "model", rollups) for r in await get(query)])  # fmt: skip
        hists = [ledger.merge_histograms([ledger.histogram_counts(await get(query)) for query in
                 ledger.histogram_queries(d, f, bucket, metric, rollups)]) for metric in rollup.METRICS]  # type: ignore[arg-type]  # fmt: skip
        json_codec.encode(insights.series_answer(f, bucket, "model", rows, *hists))

    async def main_page(f: LedgerFilter, bucket: Any, get: Any) -> None:
        """The same page with main's Python (`console_before`), reading through `get`."""
        series = [await get(q) for q in ledger.series_queries(d, f, bucket, "model", MAIN_ROLLUPS)]
        hists = [[await get(q) for q in ledger.histogram_queries(d, f, bucket, metric, MAIN_ROLLUPS)]  # type: ignore[arg-type]
                 for metric in rollup.METRICS]  # fmt: skip
        json_codec.encode(console_before.answer(f, bucket, "model", series, *hists))

    cases = []
    for days, bucket in windows:
        for tenant in (None, "t3"):
            f = LedgerFilter(start=END - timedelta(days=days), end=END, tenant=tenant)
            count = sum(r.requests for r in await storage.usage_series(f, "day", None))
            who = "all tenants" if tenant is None else f"tenant {tenant}"
            cases += [(f"{days} days per {bucket}, {who} ({count:,} rows)", f, bucket),
                      (f"{days} days per {bucket}, {who}, one key", evolve(f, key_id="key_3"), bucket)]  # fmt: skip
    times: dict[str, list[float]] = {}
    for label, f, bucket in cases:
        times[label] = [await timed(repeat, lambda f=f, b=bucket, r=r: page(f, b, r))
                        for r in (sources.ROLLUPS, BEFORE, LEDGER_ONLY)]  # fmt: skip
    async with main_schema(url, fetch) as old_fetch:
        for label, f, bucket in cases:
            times[label].insert(1, await timed(repeat, lambda f=f, b=bucket: main_page(f, b, old_fetch)))
    print("Usage page (three reads, answer, JSON), median ms: served | main's code and indexes"
          " | 009's rollup alone | ledger alone")  # fmt: skip
    for label, (served, main, before, raw) in times.items():
        print(f"    {label:52} {served:8.1f} | {main:8.1f} | {before:8.1f} | {raw:8.1f}"
              f"   served/main {served / main:5.2f}")  # fmt: skip

    for days, bucket in windows:
        for tenant in (None, "t3"):
            f = LedgerFilter(start=END - timedelta(days=days), end=END, tenant=tenant)
            list_ms = await timed(repeat, lambda f=f: storage.ledger_page(f, 51, None))
            print(f"{days:>2} days per {bucket}, tenant {tenant}: requests page {list_ms:7.1f} ms")
            if tenant is not None and bucket == "day":

                async def totals(f: LedgerFilter, rollups: tuple[sources.Source, ...]) -> None:
                    parts = []
                    for query in ledger.totals_queries(d, f, ("day", "model"), rollups):
                        parts += ledger.totals_parts(("day", "model"), await fetch(query))

                async def in_python(f: LedgerFilter = f) -> None:
                    assert f.tenant is not None
                    found = await storage.usage_rows(f.tenant, f.start, f.end)
                    aggregate([ledger_row(r) for r in found], ("day", "model"))

                served = await timed(repeat, lambda f=f: totals(f, sources.ROLLUPS))
                before = await timed(repeat, lambda f=f: totals(f, BEFORE))
                python_ms = await timed(repeat, in_python)
                print(f"    /v1/usage         {served:7.1f} ms (before {before:7.1f},"
                      f" rows summed in Python {python_ms:7.1f})")  # fmt: skip
    await storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keys", type=int, default=200, help="keys the rows come from, in turn")
    parser.add_argument("--database-url", help="default: a new SQLite file in a temp dir")
    parser.add_argument(
        "--reuse", action="store_true",
        help="keep a database that already holds --rows ledger rows (filled by an earlier run"
        " with the same --rows and --keys, e.g. --database-url sqlite:///bench.db) instead of"
        " filling it again; an empty one is filled",
    )  # fmt: skip
    parser.add_argument(
        "--window", action="append", choices=[f"{d}:{b}" for d, b in WINDOWS],
        help="time only this window (days:bucket; repeatable); default every one",
    )  # fmt: skip
    args = parser.parse_args()
    windows = WINDOWS if not args.window else tuple(
        (int(w.split(":")[0]), w.split(":")[1]) for w in args.window)  # fmt: skip
    if args.reuse and not args.database_url:
        parser.error("--reuse needs --database-url (a temporary database is never kept)")
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        trio.run(measure, url, args.rows, args.repeat, args.keys, args.reuse, windows)


if __name__ == "__main__":
    main()
