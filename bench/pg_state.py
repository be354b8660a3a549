"""`python -m bench.pg_state`: what one state change costs the gateway process on Postgres.

Owns: a micro-benchmark of `PostgresStorage.update_state` on one scope (what a rate
limit near its limit does per request, and a lease), of `update_states` on three (a
budget reservation without a slice over key, project and tenant, and a slice's renewal),
of `read_state` and of a key lookup that misses the key cache (`key_by_prefix`), on a fresh database (`bench.targets.postgres_database`,
`UMG_BENCH_PG_URL`). It prints, per operation, the process CPU per call (all threads,
`time.process_time`: the scheduler's exact count; the user / system split from
`os.times`, in clock ticks, so coarse) and the wall time per call. Run it pinned to one core (`taskset -c
0`); the Postgres server's own CPU is not counted. Options: `--calls N` (per operation
and round), `--rounds N`.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from adapters.storage import open_storage
from adapters.storage.postgres import PostgresStorage
from bench import targets
from bench.storage import _key


def _bump(state: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
    n = int((state or {}).get("n", 0)) + 1
    return n, {"n": n}


def _bump_all(states: dict[str, dict[str, Any] | None]) -> tuple[None, dict[str, dict[str, Any]]]:
    return None, {scope: _bump(state)[1] for scope, state in states.items()}


_SCOPES = ("budget:key:bench", "budget:project:bench", "budget:tenant:bench")


async def main(calls: int, rounds: int) -> None:
    with targets.postgres_database() as url:
        storage = open_storage(url)
        assert isinstance(storage, PostgresStorage), url
        await storage.migrate()
        _, key = _key()
        await storage.insert_key(key)

        async def key_miss() -> object:
            storage.keys.forget(key.prefix)
            return await storage.key_by_prefix(key.prefix)

        ops: dict[str, Callable[[], Awaitable[object]]] = {
            "update_state": lambda: storage.update_state("rl:bench", _bump),
            "update_states": lambda: storage.update_states(_SCOPES, _bump_all),
            "read_state": lambda: storage.read_state("rl:bench"),
            "key (a miss)": key_miss,
        }
        try:
            for _ in range(rounds):
                for name, op in ops.items():
                    t0, cpu, wall = os.times(), time.process_time(), time.perf_counter()
                    for _ in range(calls):
                        await op()
                    wall, cpu, t1 = time.perf_counter() - wall, time.process_time() - cpu, os.times()
                    user, system = (t1.user - t0.user) / calls, (t1.system - t0.system) / calls
                    cpu /= calls
                    print(f"{name:13}: CPU/call {cpu * 1000:6.3f} ms (ticks: user {user * 1000:.3f},"
                          f" system {system * 1000:.3f})  wall/call {wall / calls * 1000:6.2f} ms", flush=True)
        finally:
            await storage.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    trio.run(main, args.calls, args.rounds)
