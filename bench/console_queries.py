"""`make bench-console`: how long the console's usage page takes on a large ledger.

Fills a fresh SQLite database (or, with `--database-url postgresql://...`, a Postgres
database you created for it; its `usage` table must be empty) with `--rows` ledger rows
(default 1,000,000) spread over 90 days, 20 tenants, 200 keys and 6 models, then builds
the rollups from them (the fills of migrations 009, 011 and 012; the rows bypass the
ledger writer, which keeps them), then times the three queries the Usage page sends for
one refresh (`Storage.usage_series` by model and the two `usage_histogram`s) over windows
of 1, 7 and 30 days (per hour; 30 days per day too), for all tenants (admin) and for one
tenant, plus one Requests page (`ledger_page`, 50 rows), the same Usage page for one key,
and for one tenant `/v1/usage`'s totals by day and model (`usage_totals`).

Each read is timed in the same run three ways: as served (`sources.plan`: whole days
from the daily rollup, whole hours from the all-tenant or per-tenant hourly rollup, the
rest from the ledger), as it was with the hourly rollup of migration 009 alone
(`before`: a read on a key then read the ledger), and on the ledger alone. `--keys`
(default 200) is how many keys the rows come from: a rollup holds one row per period and
value of its key columns, so how much smaller than the ledger it is depends on how many
rows those send per period. Each timing is the median of `--repeat` runs, after one untimed run.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import trio
from attrs import evolve

from adapters.storage import codec, ledger, open_storage, rollup, sources
from adapters.storage.base import Storage
from adapters.storage.ledger import LedgerFilter
from adapters.storage.records import UsageRecord
from core.model import Usage
from core.usage import LedgerRow, aggregate

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
        conn.commit()
        conn.execute("ANALYZE")
        counts = {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables}
        conn.close()
        return counts
    with psycopg.connect(url, autocommit=True) as pg:
        for statement in rollup.backfill_all("postgres"):
            pg.execute(statement.encode())
        counts = {}
        for table in tables:
            pg.execute(f"ANALYZE {table}".encode())
            row = pg.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
            counts[table] = int(row[0]) if row else 0
        return counts


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


async def measure(url: str, n: int, repeat: int, keys: int) -> None:
    storage: Storage = open_storage(url)
    await storage.migrate()
    d: ledger.Dialect = storage.dialect  # type: ignore[attr-defined]
    fetch = storage._fetch  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    fill(url, n, keys)
    print(f"filled {n:,} rows in {time.perf_counter() - t0:.1f} s ({url.split(':', 1)[0]})")
    t0 = time.perf_counter()
    counts = roll_up(url)
    print(f"rolled up in {time.perf_counter() - t0:.1f} s: "
          + ", ".join(f"{t} {c:,}" for t, c in counts.items()))  # fmt: skip

    async def page(f: LedgerFilter, bucket: Any, rollups: tuple[sources.Source, ...]) -> None:
        """The Usage page's three reads, from `rollups` and the ledger."""
        found: list[ledger.SeriesRow] = []
        for query in ledger.series_queries(d, f, bucket, "model", rollups):
            found += [ledger.series_row(r) for r in await fetch(query)]
        ledger.merge_series(found)
        for metric in rollup.METRICS:
            bins: list[ledger.HistogramRow] = []
            for query in ledger.histogram_queries(d, f, bucket, metric, rollups):  # type: ignore[arg-type]
                bins += ledger.histogram_rows(await fetch(query))
            ledger.merge_histogram(bins)

    async def three(f: LedgerFilter, bucket: Any) -> str:
        """The page as served, as before 011/012, on the ledger alone: their times."""
        served = await timed(repeat, lambda: page(f, bucket, sources.ROLLUPS))
        before = await timed(repeat, lambda: page(f, bucket, BEFORE))
        raw = await timed(repeat, lambda: page(f, bucket, LEDGER_ONLY))
        return f"{served:7.1f} ms (before {before:7.1f}, ledger only {raw:7.1f})"

    for days, bucket in ((1, "hour"), (7, "hour"), (30, "hour"), (30, "day")):
        for tenant in (None, "t3"):
            f = LedgerFilter(start=END - timedelta(days=days), end=END, tenant=tenant)
            count = sum(r.requests for r in await storage.usage_series(f, "day", None))
            who = "all tenants" if tenant is None else f"tenant {tenant}"
            print(f"{days:>2} days per {bucket}, {who} ({count:,} rows):")
            print(f"    usage page        {await three(f, bucket)}")
            print(f"    one key's page    {await three(evolve(f, key_id='key_3'), bucket)}")
            list_ms = await timed(repeat, lambda f=f: storage.ledger_page(f, 51, None))
            print(f"    requests page     {list_ms:7.1f} ms")
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        trio.run(measure, url, args.rows, args.repeat, args.keys)


if __name__ == "__main__":
    main()
