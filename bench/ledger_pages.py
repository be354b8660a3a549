"""`python -m bench.ledger_pages`: which pages a lone ledger row writes on SQLite.

Fills a new SQLite ledger with `--fill` rows (through `Storage.insert_usage`, in batches,
so its b-trees have a realistic depth), then writes `--rows` rows one at a time as the
gateway does at c=1 (`insert_usage(alone=True)`: each its own transaction), for
`--rounds` rounds. Before each round the WAL is truncated and the writer's own
checkpoints are held off, so after it the WAL holds exactly the frames those rows wrote;
each frame's page is named by the b-tree that owns it (SQLite's `dbstat`). Prints the
frames per row, in all and per table or index, and the process CPU per row. Rows have
random ids and request ids (as `adapters/driver.new_id` makes them), 0.2 s apart, from 5
tenants, 20 keys and 3 models. `--drop INDEX` (repeatable) drops an index after the
migrations first, to see what a row would write without it (the reads may need it:
`tests/adapters/test_ledger_queries.py`).
"""

from __future__ import annotations

import argparse
import collections
import secrets
import sqlite3
import statistics
import struct
import tempfile
import time
from datetime import timedelta

import trio
from attrs import evolve

from adapters.storage import open_storage, sqlite_conn
from adapters.storage.records import UsageRecord
from bench.ledger_writer import START, row

_WAL_HEADER, _FRAME_HEADER = 32, 24


def record(i: int) -> UsageRecord:
    return evolve(
        row(i), id=f"use_{secrets.token_hex(12)}", request_id=f"req_{secrets.token_hex(12)}",
        at=START + timedelta(seconds=i * 0.2),
    )  # fmt: skip


def wal_pages(path: str) -> list[int]:
    """The page number of every frame in the WAL of the database at `path`."""
    with open(path + "-wal", "rb") as f:
        data = f.read()
    if len(data) < _WAL_HEADER:
        return []
    page_size = struct.unpack(">I", data[8:12])[0]
    pages, at = [], _WAL_HEADER
    while at + _FRAME_HEADER <= len(data):
        pages.append(struct.unpack(">I", data[at : at + 4])[0])
        at += _FRAME_HEADER + page_size
    return pages


async def main(fill: int, rows: int, rounds: int, drop: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/pages.db"
        storage = open_storage(f"sqlite:///{path}")
        await storage.migrate()
        raw = sqlite3.connect(path, isolation_level=None)
        for index in drop:
            raw.execute(f"DROP INDEX {index}")

        async def writer(first: int) -> None:
            for i in range(first, fill, 64):
                await storage.insert_usage(record(i))

        async with trio.open_nursery() as nursery:
            for first in range(64):
                nursery.start_soon(writer, first)
        # hold the writer's checkpoints off: the WAL then keeps every frame of a round
        every = sqlite_conn._CHECKPOINT_EVERY
        sqlite_conn._CHECKPOINT_EVERY = 1 << 62
        cpu: list[float] = []
        owners: collections.Counter[str] = collections.Counter()
        n = fill
        try:
            for r in range(rounds):
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                t0 = time.process_time()
                for _ in range(rows):
                    await storage.insert_usage(record(n), alone=True)
                    n += 1
                cpu.append((time.process_time() - t0) / rows * 1e6)
                names = dict(raw.execute("SELECT pageno, name FROM dbstat"))
                owners.update(str(names.get(p, "(freed)")) for p in wal_pages(path))
                print(f"round {r + 1}: {cpu[-1]:6.1f} us CPU per lone row")
        finally:
            sqlite_conn._CHECKPOINT_EVERY = every
            raw.close()
            await storage.close()
    total = rows * rounds
    print(f"dropped: {', '.join(drop) or 'none'}; {sum(owners.values()) / total:.2f} WAL frames"
          f" per lone row; CPU median {statistics.median(cpu):.1f} us per row")  # fmt: skip
    for name, frames in owners.most_common():
        print(f"  {name:<32} {frames / total:6.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--fill", type=int, default=20000, help="rows written first")
    parser.add_argument("--rows", type=int, default=500, help="lone rows per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--drop", action="append", default=[], metavar="INDEX",
                        help="drop this index first (repeatable)")  # fmt: skip
    args = parser.parse_args()
    trio.run(main, args.fill, args.rows, args.rounds, args.drop)
