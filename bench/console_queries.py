"""`make bench-console`: how long the console's usage page takes on a large ledger.

Fills a fresh SQLite database (or, with `--database-url postgresql://...`, a Postgres
database you created for it; its `usage` table must be empty) with `--rows` ledger rows
(default 1,000,000) spread over 90 days, 20 tenants, 200 keys and 6 models, then builds
the hourly rollup from them (migration 009's fill; the rows bypass the ledger writer,
which keeps it), then times the three queries the Usage page sends for one refresh
(`Storage.usage_series` and the two `usage_histogram`s) over windows of 1, 7 and 30 days,
for all tenants (admin) and for one tenant, plus one Requests page (`ledger_page`, 50
rows), the same Usage page for one key (read from the ledger: the rollup has no key), and
for one tenant `/v1/usage`'s totals by day and model (`usage_totals`). Each Usage page is
timed as served (whole hours from the rollup, edges from the ledger) and with the same
three reads on the ledger alone (the path before the rollup), and the totals as served
and as they were read before (every row of the window, added up in Python by
`core.usage.aggregate`), in the same run. `--keys` (default 200) is how many keys the
rows come from; the rollup holds one row per (hour, tenant, project, model, status,
...), so how much smaller than the ledger it is depends on how many rows those send per
hour. Each timing is the median of `--repeat` runs.
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

from adapters.storage import codec, ledger, open_storage, rollup
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


def roll_up(url: str) -> int:
    """Build the hourly rollup of the rows `fill` wrote behind the writer (migration 009's
    fill); the number of rows in `rollup.HOURLY`."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        for statement in rollup.backfill("sqlite"):
            conn.execute(statement)
        conn.commit()
        conn.execute("ANALYZE")
        count = int(conn.execute(f"SELECT count(*) FROM {rollup.HOURLY}").fetchone()[0])
        conn.close()
        return count
    with psycopg.connect(url, autocommit=True) as pg:
        for statement in rollup.backfill("postgres"):
            pg.execute(statement.encode())
        for table in rollup.TABLES:
            pg.execute(f"ANALYZE {table}".encode())
        row = pg.execute(f"SELECT count(*) FROM {rollup.HOURLY}".encode()).fetchone()
        return int(row[0]) if row else 0


async def timed(repeat: int, fn: Any) -> float:
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
    t0 = time.perf_counter()
    fill(url, n, keys)
    print(f"filled {n:,} rows in {time.perf_counter() - t0:.1f} s ({url.split(':', 1)[0]})")
    t0 = time.perf_counter()
    hourly = roll_up(url)
    print(f"rolled up into {hourly:,} hourly rows in {time.perf_counter() - t0:.1f} s")
    for days in (1, 7, 30):
        for tenant in (None, "t3"):
            f = LedgerFilter(start=END - timedelta(days=days), end=END, tenant=tenant)
            bucket = "hour" if days <= 7 else "day"

            async def usage_page(f: LedgerFilter = f, bucket: Any = bucket) -> None:
                await storage.usage_series(f, bucket, "model")
                await storage.usage_histogram(f, bucket, "latency_ms")
                await storage.usage_histogram(f, bucket, "ttft_ms")

            async def raw_page(f: LedgerFilter = f, bucket: Any = bucket) -> None:
                """The same three reads on the ledger alone (as before the rollup)."""
                d = storage.dialect  # type: ignore[attr-defined]
                for query in (ledger.series_query(d, f, bucket, "model"),
                              ledger.histogram_query(d, f, bucket, "latency_ms"),
                              ledger.histogram_query(d, f, bucket, "ttft_ms")):  # fmt: skip
                    await storage._fetch(query)  # type: ignore[attr-defined]

            async def requests_page(f: LedgerFilter = f) -> None:
                await storage.ledger_page(f, 51, None)

            async def key_page(f: LedgerFilter = f, bucket: Any = bucket) -> None:
                await usage_page(evolve(f, key_id="key_3"), bucket)

            async def totals(f: LedgerFilter = f) -> None:
                await storage.usage_totals(f, ("day", "model"))

            async def totals_before(f: LedgerFilter = f) -> None:
                assert f.tenant is not None
                found = await storage.usage_rows(f.tenant, f.start, f.end)
                aggregate([ledger_row(r) for r in found], ("day", "model"))

            rows_in = (await storage.usage_series(f, "day", None))
            count = sum(r.requests for r in rows_in)
            raw_ms = await timed(repeat, raw_page)
            page_ms = await timed(repeat, usage_page)
            list_ms = await timed(repeat, requests_page)
            key_ms = await timed(repeat, key_page)
            who = "all tenants" if tenant is None else f"tenant {tenant}"
            line = (f"{days:>2} days, {who:<11} ({count:>9,} rows): usage page {page_ms:8.1f} ms"
                    f" (ledger only {raw_ms:8.1f} ms), one key's {key_ms:7.1f} ms,"
                    f" requests page {list_ms:6.1f} ms")  # fmt: skip
            if tenant is not None:
                sql_ms, python_ms = await timed(repeat, totals), await timed(repeat, totals_before)
                line += f"; /v1/usage {sql_ms:7.1f} ms (rows summed in Python {python_ms:7.1f} ms)"
            print(line)
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
