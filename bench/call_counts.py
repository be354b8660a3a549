"""Which Python functions one served request calls, and how often: cProfile per request.

Owns: serving the gateway in this process as `bench.steps` does (the bench's `ours`
settings: SQLite, live mode to the fake provider, a key with rpm and tpm limits), with
the client in its own thread and its own Trio run, and profiling only the Trio thread
(`cProfile` profiles the thread that enables it) for `--requests` requests at
`--concurrency` after a warm-up. It prints, per request, the calls and the own time of
the `--top` functions with the most calls (or, with `--sort tottime`, the most own time),
and the calls and own time summed by module (the gateway's packages by file, the rest by
package), so a cut can be named by the calls it removes: a count that does not move with
the machine's load, unlike the times beside it (which cProfile inflates, per call).

The ledger writer's and the exporters' worker threads are not in it (not the Trio
thread); `bench.instr_count` counts every thread in instructions.

`python -m bench.call_counts [--kind json|stream] [--requests 300] [--concurrency 16]
[--top 40] [--sort calls|tottime] [--callers NAME,...]`; `--callers` also prints who
calls each function whose name (or `file:name`) contains NAME, and how often per request.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
from collections import Counter, defaultdict
from contextlib import ExitStack
from pathlib import Path

import trio

from bench.in_process import bench_gateway
from bench.loadgen import run_load
from bench.run import STREAM_DIRECTIVE
from bench.run import body as request_body
from bench.targets import ROOT, start_provider
from server.serve import serve

Row = tuple[str, int, str]  # file, line, function


def _module(path: str) -> str:
    """A gateway file by its path in the checkout; anything else by its package."""
    root = str(ROOT) + os.sep
    if path.startswith(root):
        return path.removeprefix(root)
    if "site-packages" + os.sep in path:
        return path.split("site-packages" + os.sep, 1)[1].split(os.sep, 1)[0]
    if path.startswith("<") or path == "~":
        return "builtins (C)"
    return "stdlib:" + Path(path).stem


async def profile(provider: str, db: str, kind: str, requests: int, concurrency: int) -> cProfile.Profile:
    services, key = await bench_gateway(provider, db)
    body = request_body(stream=kind == "stream", directive=STREAM_DIRECTIVE if kind == "stream" else "")
    stop = trio.Event()
    profiler = cProfile.Profile()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(lambda task_status: serve(
            services, host="127.0.0.1", port=0, shutdown=stop.wait, workers=False, task_status=task_status))
        target = url + "/v1/chat/completions"
        headers = {"Authorization": f"Bearer {key}"}

        def load(n: int, c: int) -> int:
            return trio.run(lambda: run_load(target, body, headers, requests=n, concurrency=c)).errors

        await trio.to_thread.run_sync(load, 200, concurrency)  # warm up
        profiler.enable()
        errors = await trio.to_thread.run_sync(load, requests, concurrency)
        profiler.disable()
        if errors:
            raise RuntimeError(f"{errors} of {requests} requests failed")
        stop.set()
    return profiler


def report(profiler: cProfile.Profile, requests: int, top: int, sort: str, callers: list[str]) -> None:
    stats = pstats.Stats(profiler)
    table: dict[Row, tuple[int, float]] = {
        func: (int(nc), float(tt)) for func, (_cc, nc, tt, _ct, _callers) in stats.stats.items()  # type: ignore[attr-defined]
    }
    calls = sum(n for n, _ in table.values())
    own = sum(t for _, t in table.values())
    print(f"{calls / requests:,.0f} calls, {own / requests * 1e6:,.0f} us own time per request (profiled)")
    by_module: Counter[str] = Counter()
    by_module_time: defaultdict[str, float] = defaultdict(float)
    for (path, _line, _name), (n, t) in table.items():
        by_module[_module(path)] += n
        by_module_time[_module(path)] += t
    print(f"\n{'calls/req':>10} {'us/req':>8}  module")
    for mod, n in by_module.most_common(top):
        print(f"{n / requests:10.1f} {by_module_time[mod] / requests * 1e6:8.1f}  {mod}")
    key = (lambda item: item[1][0]) if sort == "calls" else (lambda item: item[1][1])
    print(f"\n{'calls/req':>10} {'us/req':>8}  function")
    for (path, line, name), (n, t) in sorted(table.items(), key=key, reverse=True)[:top]:
        print(f"{n / requests:10.2f} {t / requests * 1e6:8.1f}  {_module(path)}:{line}({name})")
    for needle in callers:
        for (path, line, name), entry in stats.stats.items():  # type: ignore[attr-defined]
            if needle not in f"{_module(path)}:{name}":
                continue
            print(f"\n{entry[1] / requests:.2f} calls/req of {_module(path)}:{line}({name}), from:")
            by = sorted(entry[4].items(), key=lambda item: item[1][1], reverse=True)
            for (cpath, cline, cname), (_cc, nc, _tt, _ct) in by[:12]:
                print(f"{nc / requests:10.2f}  {_module(cpath)}:{cline}({cname})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("json", "stream"), default="json")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--sort", choices=("calls", "tottime"), default="calls")
    parser.add_argument("--dump", type=Path, help="also write the profile here (pstats format)")
    parser.add_argument("--callers", default="", help="comma-separated function names to list the callers of")
    args = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        provider, _ = start_provider(stack, Path(tmp))
        profiler = trio.run(profile, provider, str(Path(tmp) / "calls.db"), args.kind, args.requests,
                            args.concurrency)
        if args.dump is not None:
            profiler.dump_stats(args.dump)
        report(profiler, args.requests, args.top, args.sort, [c for c in args.callers.split(",") if c])


if __name__ == "__main__":
    main()
