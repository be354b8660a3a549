"""A/B of served gateways loaded at the same time, so the host's noise hits every one alike.

Owns: serving each named target as `bench.run` serves it (bench/targets.py: `ours` and its
telemetry variants, `before-*` from `--compare DIR`, `ours-pg` / `before-pg` as two
processes on a Postgres database of their own, `portkey`), ALL pinned on the gateway core, then
`--rounds` rounds in which every target gets a `--seconds` wrk slice of JSON at
`--concurrency` at the same moment (one wrk per target, the load core shared; the order
they are started in rotates round by round). Per target
and round it reads the CPU of the process's main (Trio) thread and of the whole process from
`/proc/PID/task/*/schedstat` (summed over a target's processes) and divides by the
requests answered; it prints per target the
median of those, its req/s, and the median (with the interquartile range) over the rounds
of each round's ratio to the first target. A second copy of the first target is the
control: its ratio should be about 1.

Why: one target after another, rounds of the same code spread 10 to 15 % on this shared
host, and a 5 % difference (issue 10's bar: tracing + metrics on against off) never shows.
Loaded together, the spread of a round's ratio fell to about ±3 to 5 % (branch trace2,
docs/performance.md). Each target's share of the core depends on the others, so compare
CPU per request, not req/s, between targets.

After the ratios it prints, per target and over all rounds, what the main thread spent in
user and system time, its minor page faults, context switches and read- / write-like
system calls per request (`/proc/PID/task/PID/stat`, `status`, `io`): whether a
difference is the kernel's or the interpreter's own (branch otel: the interpreter's).

`python -m bench.served_together [--targets ours-log,ours-log,ours-logtm] [--rounds 30]
[--seconds 2] [--concurrency 16] [--warmup SECONDS] [--apart] [--compare DIR]
[--interpreter PATH]` (`--warmup`: that long a first slice, not counted; `--apart`: each
round's slices one after another, each target alone on the core; `--interpreter`: the
`before-*` targets served by another venv's Python, to compare interpreters)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from bench import targets, wrk
from bench.run import _variant_env, body

SERVE_CPU = "0"


def _ns(pid: int, tid: int | str) -> int:
    """Nanoseconds a thread has run (the first field of its schedstat)."""
    return int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])


def _cpu(pid: int) -> tuple[int, int]:
    """(main thread, whole process) nanoseconds run so far."""
    return _ns(pid, pid), sum(_ns(pid, tid) for tid in os.listdir(f"/proc/{pid}/task"))


def _kernel(pid: int) -> tuple[int, int, int, int, int, int, int]:
    """The main thread's user and system clock ticks, minor page faults, voluntary and
    involuntary context switches, read and write system calls so far (its `stat`,
    `status` and `io`)."""
    stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after the name, from the state (field 3) on
    status = Path(f"/proc/{pid}/task/{pid}/status").read_text().splitlines()
    switches = {k: int(v) for k, _, v in (line.partition(":\t") for line in status) if k.endswith("ctxt_switches")}
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/task/{pid}/io").read_text().splitlines())
    return (int(fields[11]), int(fields[12]), int(fields[7]),
            switches["voluntary_ctxt_switches"], switches["nonvoluntary_ctxt_switches"],
            int(io["syscr"]), int(io["syscw"]))


def _start(stack: ExitStack, name: str, index: int, tmp: Path, provider: str,
           compare: Path | None, interpreter: str | None) -> targets.Target:
    if name == "portkey":
        return targets.portkey(stack, tmp, provider, SERVE_CPU)
    before = name.startswith("before")
    if before and compare is None and interpreter is None:
        raise SystemExit(f"{name} needs --compare DIR or --interpreter PATH")
    variant = "ours" + name.removeprefix("before") if before else name
    source = compare if before and compare is not None else targets.ROOT
    python = interpreter if before else None
    if variant == "ours-pg":  # two processes on a database of their own, as bench.run's
        url = stack.enter_context(targets.postgres_database())
        return targets.ours(stack, tmp, provider, SERVE_CPU, processes=2, database_url=url,
                            name=f"{name}-{index}", source=source, python=python)
    # a name of its own per process (its database and log), the variant's environment
    return targets.ours(stack, tmp, provider, SERVE_CPU, name=f"{name}-{index}", source=source,
                        extra_env=_variant_env(variant), python=python)


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 3:
        return min(values), max(values)
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="ours-log,ours-log,ours-logtm")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=float, help="seconds of load on every target at once before the"
                        " rounds (default: one slice); a long one lets tracing's `Backoff` reach its longest"
                        " pause, as a collector down for long does")
    parser.add_argument("--apart", action="store_true", help="each round's slices one after another"
                        " (each target alone on the core), not at once")
    parser.add_argument("--compare", type=Path, help="the checkout `before-*` targets are served from")
    parser.add_argument("--interpreter", help="the Python that serves the `before-*` targets (another"
                        " venv's bin/python, to compare interpreters); else this venv's")
    args = parser.parse_args()
    names = args.targets.split(",")
    payload = body(False)
    with tempfile.TemporaryDirectory(prefix="umg-together-") as name, ExitStack() as stack:
        tmp = Path(name)
        provider, _ = targets.start_provider(stack, tmp)
        served = [_start(stack, n, i, tmp, provider, args.compare, args.interpreter) for i, n in enumerate(names)]
        file = tmp / "body.json"
        file.write_bytes(payload)

        kernel = [[0] * 8 for _ in served]  # per target: the main thread's counters, requests

        def slice_of(target: targets.Target, seconds: float = args.seconds) -> tuple[float, float, float]:
            main0, all0 = map(sum, zip(*map(_cpu, target.pids), strict=True))
            k0 = list(map(sum, zip(*map(_kernel, target.pids), strict=True)))
            done = wrk.run(target.urls, file, target.headers, connections=args.concurrency, seconds=seconds)
            main1, all1 = map(sum, zip(*map(_cpu, target.pids), strict=True))
            k1 = list(map(sum, zip(*map(_kernel, target.pids), strict=True)))
            counted = kernel[served.index(target)]
            for j, (a, b) in enumerate(zip(k0, k1, strict=True)):
                counted[j] += b - a
            counted[7] += done.requests
            per = max(done.requests, 1) * 1000  # ns -> µs per request
            return (main1 - main0) / per, (all1 - all0) / per, done.req_s

        rounds: list[list[tuple[float, float, float]]] = []
        print("pids: " + ", ".join(f"{n} {' '.join(map(str, t.pids))}" for n, t in zip(names, served, strict=True)),
              flush=True)
        with ThreadPoolExecutor(len(served)) as pool:
            list(pool.map(slice_of, served, [args.warmup or args.seconds] * len(served)))  # warm-up, together
            for counted in kernel:
                counted[:] = [0] * len(counted)
            for r in range(args.rounds):
                # each round starts the targets' loads in another order (a rotation), so
                # none is always first or last to start: in one fixed order the target
                # listed later came out ~2 points cheaper (branch tm)
                order = [(r + k) % len(served) for k in range(len(served))]
                run = map if args.apart else pool.map  # apart: one slice after another, in that order
                got = dict(zip(order, run(slice_of, [served[i] for i in order]), strict=True))
                rounds.append([got[i] for i in range(len(served))])
        print(f"{args.rounds} rounds of {args.seconds:g} s at c={args.concurrency}"
              f"{' one target after another' if args.apart else ''}, load average "
              f"{os.getloadavg()[0]:.1f} at the end; ratios to the first target, round by round")
        for i, n in enumerate(names):
            main_us = [r[i][0] for r in rounds]
            all_us = [r[i][1] for r in rounds]
            ratio = [r[i][0] / r[0][0] for r in rounds]
            low, high = _quartiles(ratio)
            print(f"{n:16} main thread {statistics.median(main_us):7.1f} µs/req, process "
                  f"{statistics.median(all_us):7.1f}, {statistics.median(r[i][2] for r in rounds):6.0f} req/s; "
                  f"main / {names[0]} {statistics.median(ratio):.3f} (IQR {low:.3f}-{high:.3f}), "
                  f"process {statistics.median(r[i][1] / r[0][1] for r in rounds):.3f}", flush=True)
        tick = 1e6 / os.sysconf("SC_CLK_TCK")  # µs
        print("main thread, over all rounds, per request:")
        for n, (user, system, faults, voluntary, involuntary, reads, writes, done) in zip(names, kernel, strict=True):
            done = max(done, 1)
            print(f"{n:16} user {user * tick / done:7.1f} µs, system {system * tick / done:6.1f} µs, "
                  f"minor faults {faults / done:6.3f}, switches {voluntary / done:5.2f} voluntary "
                  f"+ {involuntary / done:5.2f} involuntary, system calls {reads / done:5.2f} read-like "
                  f"+ {writes / done:5.2f} write-like", flush=True)


if __name__ == "__main__":
    main()
