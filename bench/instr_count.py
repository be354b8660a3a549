"""Instructions per served request, counted by callgrind: a figure that does not move with
the machine's noise.

Owns: serving each named target as `bench.run` serves it (bench/targets.py: `ours`, its
telemetry variants `ours-log`, `ours-logtm`, `ours-off`, `ours-obs`, and `floor-hello` /
`floor-proxy`) under `valgrind --tool=callgrind --instr-atstart=no`, warming it with
`--warmup` requests, turning instrumentation on (`callgrind_control -i on`) for exactly
`--requests` requests at `--concurrency` from this process (the bench's own h11 client,
pinned to the other core, not counted), then off, and dumping the counts. It prints the
instructions (callgrind's `Ir`, every thread of the process: the export and SQLite worker
threads too) per request per target, and the ratio of each to the first target; with
`--top N` also the N functions with the most instructions of their own per request
(callgrind_annotate's C-level view: the eval loop, allocation, dict and str work, SQLite,
the kernel entry points callgrind sees). With `--threads` each thread is counted apart;
with `--cache-sim` callgrind also simulates the caches and the L1 and last-level misses
per request are printed (callgrind's model of a cache, not this host's counters: a hint
of where served time goes that instructions do not show).

Why: this host has no hardware counters and its wall-clock rounds of one code spread by
5 to 10 %; an instruction count of the same requests is the same from run to run (it is
not time: cache misses and system time are not in it). Slow: a request costs about 50 to
100 times its normal time under callgrind, so a few hundred requests per target.

`python -m bench.instr_count [--targets ours-log,ours-logtm] [--scenario json|stream|stream-paced]
[--chunks N] [--gap MS] [--requests 300] [--warmup 200] [--concurrency 16] [--top 25] [--threads] [--cache-sim]
[--keep DIR] [--compare DIR]`; with `--compare DIR` a target named `before` (or `before-<variant>`)
is `ours` (or that variant) served from the checkout DIR (as `bench.run --compare`), with
this checkout's interpreter: a commit's count against another's.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from bench import callgrind, targets
from bench.run import STREAM_DIRECTIVE, _variant_env, body, load

SERVE_CPU = "0"
READY_TIMEOUT = 900.0



def _top(out: Path, count: int, requests: int) -> list[str]:
    annotate = shutil.which("callgrind_annotate")
    if annotate is None or count <= 0:
        return []
    done = subprocess.run([annotate, "--inclusive=no", "--threshold=100", str(out)],
                          capture_output=True, text=True, check=False)
    rows: list[str] = []
    for line in done.stdout.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(.*)", line)
        if m is None:
            continue
        ir = int(m.group(1).replace(",", ""))
        rows.append(f"{ir / requests:12,.0f}  {m.group(2):>5}%  {m.group(3)[:110]}")
        if len(rows) >= count:
            break
    return rows


def _start(stack: ExitStack, name: str, tmp: Path, provider: str, wrap: tuple[str, ...],
           compare: Path | None) -> targets.Target:
    if name.startswith("floor-"):
        return targets.floor(stack, tmp, provider, SERVE_CPU, name.removeprefix("floor-"), wrap=wrap,
                             ready_timeout=READY_TIMEOUT)
    source = targets.ROOT
    variant = name
    if name == "before" or name.startswith("before-"):
        if compare is None:
            raise SystemExit(f"{name}: needs --compare DIR")
        source, variant = compare.resolve(), "ours" + name.removeprefix("before")
    return targets.ours(stack, tmp, provider, SERVE_CPU, name=name, extra_env=_variant_env(variant),
                        wrap=wrap, ready_timeout=READY_TIMEOUT, source=source)


def count(name: str, tmp: Path, provider: str, payload: bytes, args: argparse.Namespace) -> tuple[float, list[str]]:
    out = tmp / f"{name}.callgrind"
    wrap = ("valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
            *(("--separate-threads=yes",) if args.threads else ()),
            *(("--cache-sim=yes",) if args.cache_sim else ()))
    with ExitStack() as stack:
        target = _start(stack, name, tmp, provider, wrap, args.compare)
        (pid,) = target.pids
        load(target, payload, requests=args.warmup, concurrency=args.concurrency)
        control = ["callgrind_control"]
        subprocess.run([*control, "-i", "on", str(pid)], check=True, capture_output=True)
        done = load(target, payload, requests=args.requests, concurrency=args.concurrency)
        subprocess.run([*control, "-i", "off", str(pid)], check=True, capture_output=True)
        subprocess.run([*control, "-d", str(pid)], check=True, capture_output=True)
        if done.errors:
            raise RuntimeError(f"{name}: {done.errors} of {args.requests} requests failed")
    # (with --threads the file named is left empty: the dumps are `-NN` per thread)
    dumps = sorted((p for p in tmp.glob(f"{name}.callgrind*") if p.stat().st_size),
                   key=lambda p: p.stat().st_mtime)
    total = sum(callgrind.total(d) for d in dumps)
    top = _top(max(dumps, key=callgrind.total), args.top, args.requests)
    if args.cache_sim:  # simulated misses (callgrind's model of this host's caches), per request
        found: dict[str, int] = {}
        for d in dumps:
            for event, value in callgrind.events(d).items():
                found[event] = found.get(event, 0) + value
        first = found.get("D1mr", 0) + found.get("D1mw", 0) + found.get("I1mr", 0)
        last = found.get("DLmr", 0) + found.get("DLmw", 0) + found.get("ILmr", 0)
        top = [f"cache misses per request: L1 {first / args.requests:,.0f}, last level {last / args.requests:,.0f}"] + top
    if args.threads:  # one dump per thread: each thread's share, the busiest first
        shares = sorted(((callgrind.total(d), d.name) for d in dumps), reverse=True)
        top = [f"thread {file}: {ir / args.requests:12,.0f} per request" for ir, file in shares if ir] + top
    return total / args.requests, top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="ours-log,ours-logtm")
    parser.add_argument("--scenario", choices=("json", "stream", "stream-paced"), default="json",
                        help="stream-paced: the chunks 5 ms apart, as in bench.run's stream16 "
                             "(stream: no gaps, so a read holds several chunks)")
    parser.add_argument("--chunks", type=int, default=0,
                        help="stream-paced: this many chunks per stream (0: bench.run's 20); two counts "
                             "with different numbers give one more read's instructions")
    parser.add_argument("--gap", type=int, default=0,
                        help="stream-paced: this many ms between chunks (0: bench.run's 5; more keeps "
                             "one chunk per read under callgrind on a loaded machine)")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--top", type=int, default=0, help="list the N costliest functions per target")
    parser.add_argument("--compare", type=Path, help="the checkout the `before` targets are served from")
    parser.add_argument("--threads", action="store_true",
                        help="count each thread apart (callgrind --separate-threads=yes) and list each one's share")
    parser.add_argument("--cache-sim", action="store_true",
                        help="also simulate the caches (callgrind --cache-sim=yes) and print misses per request")
    parser.add_argument("--keep", type=Path, help="write the dumps and logs here (kept) for callgrind_annotate")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed")
    os.sched_setaffinity(0, {1})  # the client (this process) and the provider away from the served core
    directive = STREAM_DIRECTIVE if args.scenario == "stream-paced" else ""
    if directive and args.chunks:
        directive = directive.replace("chunks=20", f"chunks={args.chunks}")
    if directive and args.gap:
        directive = directive.replace("gap=5", f"gap={args.gap}")
    payload = body(args.scenario != "json", directive)
    names = args.targets.split(",")
    with ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = args.keep
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="umg-instr-")))
        provider, _ = targets.start_provider(stack, tmp)
        first: float | None = None
        for n in names:
            per, top = count(n, tmp, provider, payload, args)
            first = per if first is None else first
            print(f"{n:14} {args.scenario} c={args.concurrency}: {per:,.0f} instructions per request"
                  f"  ({per / first:.3f}x {names[0]})", flush=True)
            for row in top:
                print("    " + row)


if __name__ == "__main__":
    main()
