"""How many tasks each I/O wait of the served gateway wakes: whether its streams' reads come together.

Owns: serving `ours` as `bench.run` does (bench/targets.py), with a Trio instrument put
into its run by a `sitecustomize` (a temporary directory first on its `PYTHONPATH`,
through the target's `wrap`) that counts the tasks each I/O wait reschedules and
writes the histogram every 500 waits; then `--requests` streams (`STREAM_DIRECTIVE`, as
`stream16`) at `--concurrency` from this process after a warm-up, and the histogram of
those streams printed: waits and tasks woken per stream, tasks per wait that woke any.
Many tasks per wait is what a relay reactor (one epoll of every streaming upstream
socket) would serve in one wake-up (docs/performance.md, branch `relay`). The
instrument costs each task wake-up a Python call: the process is a little slower than
unobserved, so the figure leans high. Timed: run it under the bench lock.

`python -m bench.woken_per_wait [--requests 1000] [--concurrency 16]`
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench import targets
from bench.run import STREAM_DIRECTIVE, body, load

_SITE = '''
import collections, json, os
import trio

_OUT = os.environ["UMG_WOKEN_OUT"]


class _Woken(trio.abc.Instrument):
    def __init__(self):
        self.waiting = False
        self.woken = 0
        self.hist = collections.Counter()
        self.waits = 0

    def before_io_wait(self, timeout):
        self.waiting = True
        self.woken = 0

    def task_scheduled(self, task):
        if self.waiting:  # rescheduled by the I/O manager's events
            self.woken += 1

    def after_io_wait(self, timeout):
        self.waiting = False
        self.hist[self.woken] += 1
        self.waits += 1
        if self.waits % 500 == 0:
            with open(_OUT, "w") as f:
                json.dump(dict(self.hist), f)


_run = trio.run


def _observed(fn, *args, **kw):
    kw["instruments"] = [*kw.get("instruments", ()), _Woken()]
    return _run(fn, *args, **kw)


trio.run = _observed
'''


def _histogram(out: Path) -> dict[int, int]:
    return {int(k): v for k, v in json.loads(out.read_text()).items()} if out.exists() else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})  # the client and the provider away from the served core
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="umg-woken-")))
        site = tmp / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(_SITE)
        out = tmp / "woken.json"
        provider, _ = targets.start_provider(stack, tmp)
        wrap = ("env", f"PYTHONPATH={targets.ROOT}{os.pathsep}{site}", f"UMG_WOKEN_OUT={out}")
        target = targets.ours(stack, tmp, provider, "0", name="ours", wrap=wrap)
        payload = body(True, STREAM_DIRECTIVE)
        load(target, payload, requests=args.warmup, concurrency=args.concurrency)
        before = _histogram(out)
        started = time.monotonic()
        done = load(target, payload, requests=args.requests, concurrency=args.concurrency)
        took = time.monotonic() - started
        time.sleep(0.5)
        hist = {k: v - before.get(k, 0) for k, v in _histogram(out).items()}
    n = args.requests
    waits = sum(hist.values())
    woken = sum(k * v for k, v in hist.items())
    busy = sum(v for k, v in hist.items() if k)
    print(f"c={args.concurrency}: {n} streams in {took:.1f} s ({n / took:.0f}/s), {done.errors} failed; "
          f"I/O waits {waits / n:.1f} and tasks woken {woken / n:.1f} per stream (to the last 500 waits); "
          f"{woken / max(busy, 1):.2f} tasks per wait that woke any")
    print("  tasks per wait: waits  " + ", ".join(f"{k}: {v}" for k, v in sorted(hist.items())[:12]))


if __name__ == "__main__":
    main()
