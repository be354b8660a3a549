"""`python -m bench.pg_batch`: what one ledger batch costs the gateway process on Postgres.

Owns: a micro-benchmark of `PostgresStorage`'s writer commit alone (`_commit`: the rows'
INSERT and their rollup upserts in one transaction, through the worker thread as on the
live path), at fixed batch sizes, on a fresh database (`bench.targets.postgres_database`,
`UMG_BENCH_PG_URL`). It prints, per batch size, the process CPU per batch and per row
(user and system, all threads) and the wall time per batch. Run it pinned to one core
(`taskset -c 0`) to see what a pinned gateway pays; the Postgres server's own CPU is not
counted. Options: `--sizes 1,3,8`, `--batches N` (per size and round), `--rounds N`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time

import trio

from adapters.storage import codec, open_storage
from adapters.storage.postgres import PostgresStorage
from bench import targets
from bench.storage import _key, _row


async def main(sizes: list[int], batches: int, rounds: int) -> None:
    with targets.postgres_database() as url:
        storage = open_storage(url)
        assert isinstance(storage, PostgresStorage), url
        await storage.migrate()
        _, key = _key()
        await storage.insert_key(key)
        try:
            for n in sizes:
                for _ in range(rounds):
                    t0, cpu, wall = os.times(), time.process_time(), time.perf_counter()
                    for _ in range(batches):
                        recs = [_row(key, f"req_{secrets.token_hex(12)}") for _ in range(n)]
                        answers = await storage._commit([(codec.postgres_row(r), r) for r in recs])
                        assert all(a is True for a in answers), answers
                    wall, cpu, t1 = time.perf_counter() - wall, time.process_time() - cpu, os.times()
                    user, system = (t1.user - t0.user) / batches, (t1.system - t0.system) / batches
                    cpu /= batches
                    print(f"rows {n:3}: CPU/batch {cpu * 1000:6.3f} ms (ticks: user {user * 1000:.3f},"
                          f" system {system * 1000:.3f})  CPU/row {cpu / n * 1000:6.3f} ms"
                          f"  wall/batch {wall / batches * 1000:6.2f} ms", flush=True)
        finally:
            await storage.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1,3,8")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    trio.run(main, [int(s) for s in args.sizes.split(",")], args.batches, args.rounds)
