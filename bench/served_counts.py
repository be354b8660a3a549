"""What grows per request with concurrency in a served gateway, loaded by wrk from outside.

Owns: serving the gateway in this process the way the bench's `ours` target is served
(SQLite, live mode to the fake provider, a key with rpm and tpm, the GC tuned as `umg
serve` tunes it), pinned to core 0, and loading it with wrk (pinned to core 1, another
process, so nothing of the client is in the counts) at each `--concurrency`. Per request
it prints the process's CPU, the cyclic collector's runs by generation and their time
(`gc.callbacks`), and the upstream connections opened (`ConnectionPool._connect` calls).
`bench.steps` counts Trio's steps with its client in process; this is the same gateway
with the client's objects out of the collector's way.

`python -m bench.served_counts [--seconds 4] [--concurrency 16,64]`
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import trio

from adapters.providers import http11
from bench import wrk
from bench.in_process import bench_gateway
from bench.run import body as request_body
from bench.targets import start_provider
from server.serve import serve


class Counts:
    """Collector runs and time, and upstream connects, while `on`."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.gc_seconds = 0.0
        self.on = False
        self._started = 0.0

    def install(self, stack: ExitStack) -> None:
        connect = http11.ConnectionPool._connect

        async def counted(pool: http11.ConnectionPool, origin: http11.Origin, by: float) -> object:
            if self.on:
                self.counts["upstream connects"] += 1
            return await connect(pool, origin, by)

        http11.ConnectionPool._connect = counted  # type: ignore[method-assign,assignment]
        gc.callbacks.append(self._gc)

        def undo() -> None:
            http11.ConnectionPool._connect = connect  # type: ignore[method-assign]
            gc.callbacks.remove(self._gc)

        stack.callback(undo)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if not self.on:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.counts[f"gc gen{info['generation']} runs"] += 1
            self.gc_seconds += time.perf_counter() - self._started


async def measure(provider: str, db: str, tmp: Path, levels: list[int], seconds: float, counts: Counts) -> None:
    services, key = await bench_gateway(provider, db)
    stop = trio.Event()
    body_file = tmp / "body.json"
    body_file.write_bytes(request_body(stream=False))
    async with trio.open_nursery() as nursery:
        url = await nursery.start(lambda task_status: serve(
            services, host="127.0.0.1", port=0, shutdown=stop.wait, workers=False, task_status=task_status))
        target = url + "/v1/chat/completions"
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

        def load(connections: int, for_seconds: float) -> wrk.WrkResult:
            os.sched_setaffinity(0, {1})  # this worker thread, and so the wrk it starts
            return wrk.run((target,), body_file, headers, connections=connections, seconds=for_seconds)

        for level in levels:
            await trio.to_thread.run_sync(load, level, 1.0)  # warm up at this concurrency
            counts.counts.clear()
            counts.gc_seconds = 0.0
            counts.on = True
            cpu = time.process_time()
            result = await trio.to_thread.run_sync(load, level, seconds)
            cpu = time.process_time() - cpu
            counts.on = False
            n = max(1, result.requests)
            each = ", ".join(f"{what} {k / n:.4f}" for what, k in sorted(counts.counts.items()))
            print(f"c={level}: {result.requests} requests, {result.req_s:.0f} req/s, CPU {cpu / n * 1e6:.0f} us"
                  f" per request, collector {counts.gc_seconds / n * 1e6:.1f} us per request"
                  + (f"; per request: {each}" if each else ""))
        stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", default="16,64")
    args = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        provider, _ = start_provider(stack, Path(tmp))  # on every core, as this process
        os.sched_setaffinity(0, {0})  # then the gateway's core, as bench.run pins it
        counts = Counts()
        counts.install(stack)
        trio.run(measure, provider, str(Path(tmp) / "served.db"), Path(tmp),
                 [int(c) for c in args.concurrency.split(",")], args.seconds, counts)


if __name__ == "__main__":
    main()
