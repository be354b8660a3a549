"""What one request costs Trio and the ledger writer, counted (not timed) in process.

Owns: serving the gateway the way the bench's `ours` target is served (`server.serve`,
SQLite, live mode to the fake provider, a key with rpm and tpm limits), in this process,
with a Trio instrument attached, and sending it `--requests` chat requests at each
`--concurrency` from a client running in its own thread (its own Trio run, so none of
its tasks is counted). For each concurrency it prints, per request:

- Trio task steps (every time a task is resumed), split by task: the request's own task
  (Hypercorn's ASGI task), Hypercorn's connection reader, its keep-alive idle timer, the
  hot routes' disconnect watcher, the ledger writer, and the rest;
- tasks spawned;
- the ledger writer's transactions, and rows per transaction (`GroupCommit.batches`);
- the gateway's CPU per request: the process's CPU time less the client thread's own
  (so the client, which shares the process and its GIL, is not counted);
- upstream connections opened (`ConnectionPool._connect` calls), worker-thread calls
  (`trio.to_thread.run_sync`: a SQLite commit that did not run on the Trio thread, a
  checkpoint), and the cyclic garbage collector's runs by generation with the time they
  took (`gc.callbacks`), all per request: the costs that can grow with concurrency.

These are counts, so they hold on a loaded machine; the CPU they cost is for
`bench.run` to measure.

With `--kind stream` (20 chunks, 5 ms apart) or `--kind slow` (the `slow` scenario's
stream: 2 s to the first chunk, then 20 chunks 50 ms apart; `--requests` streams started
at once, each on its own connection, `--concurrency` ignored) the request is a stream,
and each row also gives the steps per relayed chunk.

`python -m bench.steps [--requests 500] [--concurrency 1,16,64] [--kind json|stream|slow]`
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from pathlib import Path

import trio

from adapters.providers import http11
from bench.in_process import bench_gateway
from bench.loadgen import run_load
from bench.run import SLOW_DIRECTIVE, STREAM_DIRECTIVE
from bench.run import body as request_body
from bench.streams import run_streams
from bench.targets import start_provider
from server.serve import serve

# task name -> the part of the server it is (first match wins)
PARTS = (
    ("_run_handler", "connection"),  # trio's per-connection task: Hypercorn's reader
    ("task_group._handle", "request"),  # Hypercorn's ASGI task: the app, from the request to the answer
    ("IdleTimer._watch", "idle timer"),  # server/hypercorn_tasks.py's one timer per connection
    ("_idle_timeout", "idle timer"),  # Hypercorn's own: a task per answer
    ("_receive", "disconnect watcher"),
    ("umg-storage-writer", "ledger writer"),
)


def _part(name: str) -> str:
    for needle, part in PARTS:
        if needle in name:
            return part
    return "other"


class Counting(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps: Counter[str] = Counter()
        self.spawned = 0
        self.on = False

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.on:
            self.steps[_part(task.name)] += 1

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        if self.on:
            self.spawned += 1


class Calls:
    """Upstream connects, worker-thread calls and GC runs while `on` (wrapped, not timed
    apart from the collector's own runs)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.gc_seconds = 0.0
        self.gc_us: defaultdict[str, float] = defaultdict(float)  # time in the collector by generation
        self.on = False
        self._gc_start = 0.0

    def install(self, stack: ExitStack) -> None:
        connect = http11.ConnectionPool._connect
        run_sync = trio.to_thread.run_sync

        async def counted_connect(pool: http11.ConnectionPool, origin: http11.Origin, by: float) -> object:
            if self.on:
                self.counts["upstream connects"] += 1
            return await connect(pool, origin, by)

        async def counted_run_sync(*args: object, **options: object) -> object:
            if self.on:
                self.counts["worker-thread calls"] += 1
            return await run_sync(*args, **options)  # type: ignore[arg-type]

        http11.ConnectionPool._connect = counted_connect  # type: ignore[method-assign,assignment]
        trio.to_thread.run_sync = counted_run_sync  # type: ignore[assignment]
        gc.callbacks.append(self._gc)

        def undo() -> None:
            http11.ConnectionPool._connect = connect  # type: ignore[method-assign]
            trio.to_thread.run_sync = run_sync
            gc.callbacks.remove(self._gc)

        stack.callback(undo)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if not self.on:
            return
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            took = time.perf_counter() - self._gc_start
            self.counts[f"gc gen{info['generation']} runs"] += 1
            self.gc_us[f"gc gen{info['generation']} us"] += took * 1e6
            self.gc_seconds += took


CHUNKS = 20  # the streams' chunks (both directives)


async def measure(provider: str, requests: int, levels: list[int], db: str, calls: Calls,
                  kind: str = "json") -> list[dict[str, object]]:
    services, key = await bench_gateway(provider, db)
    counting = Counting()
    trio.lowlevel.add_instrument(counting)
    stop = trio.Event()
    directive = {"json": "", "stream": STREAM_DIRECTIVE, "slow": SLOW_DIRECTIVE}[kind]
    body = request_body(stream=kind != "json", directive=directive)
    results: list[dict[str, object]] = []
    async with trio.open_nursery() as nursery:
        url = await nursery.start(lambda task_status: serve(
            services, host="127.0.0.1", port=0, shutdown=stop.wait, workers=False, task_status=task_status))
        target = url + "/v1/chat/completions"
        headers = {"Authorization": f"Bearer {key}"}

        def load(n: int, c: int) -> tuple[int, float]:
            """Errors, and the CPU seconds this (the client's) thread used."""
            started = time.thread_time()
            if kind == "slow":
                streamed = trio.run(lambda: run_streams(target, body, headers, count=n, deadline=60.0))
                return streamed.errors, time.thread_time() - started
            timings = trio.run(lambda: run_load(target, body, headers, requests=n, concurrency=c))
            return timings.errors, time.thread_time() - started

        await trio.to_thread.run_sync(load, 8 if kind == "slow" else 50, 4)  # warm up: imports, caches, connections
        for level in levels:
            writer = services.storage.writer  # type: ignore[attr-defined]
            batches = writer.batches
            counting.steps.clear()
            counting.spawned = 0
            calls.counts.clear()
            calls.gc_seconds = 0.0
            calls.gc_us.clear()
            counting.on = calls.on = True
            cpu = time.process_time()
            errors, client_cpu = await trio.to_thread.run_sync(load, requests, level)
            server_cpu = time.process_time() - cpu - client_cpu
            counting.on = calls.on = False
            transactions = writer.batches - batches
            steps = {part: round(n / requests, 2) for part, n in sorted(counting.steps.items())}
            total_steps = sum(counting.steps.values())
            results.append({
                "kind": kind, "concurrency": requests if kind == "slow" else level,
                "requests": requests, "errors": errors,
                "task steps per request": round(total_steps / requests, 2),
                **({"task steps per chunk": round(total_steps / requests / CHUNKS, 2)} if kind != "json" else {}),
                "by task": steps, "tasks spawned per request": round(counting.spawned / requests, 2),
                "ledger transactions": transactions,
                "rows per transaction": round(requests / transactions, 2) if transactions else None,
                "per request": {what: round(n / requests, 3) for what, n in sorted(calls.counts.items())},
                "server cpu us per request": round(server_cpu / requests * 1e6, 1),
                "gc us per request": round(calls.gc_seconds / requests * 1e6, 1),
                "gc us per run": {g: round(us / calls.counts[g.replace(" us", " runs")]) for g, us in sorted(calls.gc_us.items())},
            })
        stop.set()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--kind", choices=("json", "stream", "slow"), default="json")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")] if args.kind != "slow" else [1]
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        provider, _ = start_provider(stack, Path(tmp))
        calls = Calls()
        calls.install(stack)
        for row in trio.run(measure, provider, args.requests, levels, str(Path(tmp) / "steps.db"), calls,
                            args.kind):
            print(json.dumps(row))


if __name__ == "__main__":
    main()
