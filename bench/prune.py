"""`make bench-prune`: how long a prune takes on a large ledger, and its longest lock.

Fills a fresh SQLite database (or, with `--database-url postgresql://...`, an empty
Postgres database you created for it) with `--rows` ledger rows over 90 days (the rows
of `bench/console_queries.py`, and their hourly rollup), then prunes with
`ledger_days = 60` at the ledger's end, so about a third of the rows go, in batches of
`--batch-rows`. Prints the rows deleted per store, the whole prune's time, and the
slowest and median batch (one transaction each: the longest the prune holds a lock),
then checks that the kept days' totals from the rollup still equal the kept rows'.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import timedelta

import trio

from adapters.storage import open_storage
from adapters.storage.base import Storage
from adapters.storage.ledger import LedgerFilter
from bench.console_queries import END, fill, roll_up
from core import retention
from core.retention import STORES, RetentionPolicy


async def timed_prune(storage: Storage, policy: RetentionPolicy) -> tuple[dict[str, int], list[float]]:
    cut = retention.cutoffs(policy, 86400.0, END.timestamp())
    counts: dict[str, int] = {}
    batches: list[float] = []
    for store in STORES:
        counts[store] = 0
        while True:
            started = time.perf_counter()
            n = await storage.prune(store, cut, policy.batch_rows)
            batches.append(time.perf_counter() - started)
            if n == 0:
                break
            counts[store] += n
    return counts, batches


async def run(url: str, n: int, batch_rows: int) -> None:
    print(f"filling {n:,} rows ...", flush=True)
    storage = open_storage(url)
    await storage.migrate()
    await storage.close()
    fill(url, n, 200)
    roll_up(url)
    storage = open_storage(url)
    policy = RetentionPolicy(ledger_days=60, batch_rows=batch_rows)
    cut = retention.cutoffs(policy, 86400.0, END.timestamp()).ledger
    assert cut is not None
    try:
        started = time.perf_counter()
        counts, batches = await timed_prune(storage, policy)
        total = time.perf_counter() - started
        print(f"pruned in {total:.2f} s: " + ", ".join(f"{s} {c:,}" for s, c in counts.items()))
        print(
            f"{len(batches)} batches of up to {batch_rows} rows: slowest"
            f" {max(batches) * 1000:.1f} ms, median {statistics.median(batches) * 1000:.1f} ms"
        )
        f = LedgerFilter(start=END - timedelta(days=61), end=END)
        series = await storage.usage_series(f, "day", None)
        kept = await storage.usage_count()
        assert sum(r.requests for r in series) == kept, "rollup and ledger disagree"
        print(f"kept {kept:,} rows; the rollup's totals over the kept days equal them")
    finally:
        await storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=1000)
    parser.add_argument("--database-url", help="an empty Postgres database (default: a temp SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        trio.run(run, url, args.rows, args.batch_rows)


if __name__ == "__main__":
    main()
