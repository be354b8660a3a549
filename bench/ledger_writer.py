"""`python -m bench.ledger_writer`: what the rollups cost the SQLite ledger writer per batch.

Writes ledger rows one at a time through `Storage.insert_usage` (each its own group-commit
batch, the gateway's case at low traffic), in rounds that alternate between the writer
as it is (the hourly rollup of migration 009 plus the daily, all-tenant and by-model
rollups of migrations 011, 012 and 014) and the same writer with the 011/012/014 upserts
taken out (as before them), or with `--leave-out 014` only 014's (as before the console
task), in one process and one database. Prints the process CPU per batch of each
round and the medians. `--rounds` (default 6) rounds of `--rows` (default 2000) rows.

The rollups are written behind the ledger (`rollup_behind.py`, at most every
`rollup_seconds`, 1 s): each round ends with a write of what its rows left behind,
inside the timing, so a round's CPU holds its rows' rollups whenever they are written.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import trio

from adapters.storage import open_storage
from adapters.storage.records import UsageRecord
from adapters.storage.sqlite import SQLiteStorage

START = datetime(2026, 6, 1, tzinfo=UTC)


def row(i: int) -> UsageRecord:
    """Rows a second apart from 20 keys and 3 models: most batches add to a row that
    exists (the rollups' usual case), some start one."""
    model = ("gpt-4.1", "gpt-4o-mini", "claude-3.5-haiku")[i % 3]
    return UsageRecord(
        id=f"use_{i:09d}", request_id=f"req_{i:09d}", at=START + timedelta(seconds=i),
        tenant=f"t{i % 5}", project="p", key_id=f"key_{i % 20}", endpoint="chat.completions",
        model=model, provider="openai", deployment=f"openai/{model}", input_tokens=500,
        output_tokens=100, cached_input_tokens=0, cache_write_tokens=0, reasoning_tokens=0,
        cost=Decimal("0.0018000000"), price_version="2026-01", status="ok", error_code=None,
        latency_ms=10 + i % 900, ttft_ms=5 + i % 300, attempts=1, stream=False,
    )  # fmt: skip


async def main(rounds: int, rows: int, leave_out: str = "wide") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        storage = open_storage(f"sqlite:///{tmp}/bench.db")
        assert isinstance(storage, SQLiteStorage)
        full = storage._wide_upserts
        await storage.migrate()
        n = 0
        for _ in range(200):  # warm up
            await storage.insert_usage(row(n))
            n += 1
        await storage.flush_rollups()
        every, fewer = ("every rollup", "009 alone") if leave_out == "wide" else ("every rollup", "without 014")
        less = () if leave_out == "wide" else tuple(u for u in full if u.wide.table != "usage_hourly_model")
        cpu: dict[str, list[float]] = {every: [], fewer: []}
        try:
            for r in range(rounds):
                name = every if r % 2 == 0 else fewer
                storage._wide_upserts = full if r % 2 == 0 else less
                t0 = time.process_time()
                for _ in range(rows):
                    await storage.insert_usage(row(n))
                    n += 1
                await storage.flush_rollups()  # what this round's rows left behind
                per = (time.process_time() - t0) / rows * 1e6
                cpu[name].append(per)
                print(f"round {r + 1}: {name:<12} {per:6.1f} us CPU per one-row batch")
        finally:
            await storage.close()
        with_, alone = (statistics.median(v) for v in cpu.values())
        print(f"median: {every} {with_:.1f} us, {fewer} {alone:.1f} us,"
              f" difference {with_ - alone:+.1f} us ({with_ / alone:.2f}x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--leave-out", choices=("wide", "014"), default="wide",
                        help="the other rounds' writer: without the wide rollups (011, 012, 014) or without 014's")  # fmt: skip
    args = parser.parse_args()
    trio.run(main, args.rounds, args.rows, args.leave_out)
