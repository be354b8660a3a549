"""`make bench`: this gateway beside Portkey, LiteLLM and the bare provider, in one run.

Every target gets the same 2 KB OpenAI chat request (`bench/targets.py` says how each is
started). The gateways run pinned alone on one core; the load generators (wrk, and a raw
h11 client for latency and streams) and the fake provider run on the other. The Postgres
server of ours-pg / before-pg is not pinned: its backends run where the kernel puts them,
mostly on the gateway core (branch pgs measured about three quarters of their running
samples there); `--pg-on-load-cores` moves the run's own database's backends to the load
cores after each warm-up (measured there, that load core then limits req/s). Scenarios (pick with `--scenarios`, targets with `--targets`):

  c1        JSON at concurrency 1: p50 latency (reported as added to direct's) and
            gateway CPU ms per request (an added latency well above it is a wait)
  json16    JSON at concurrency 16 (wrk): req/s and gateway CPU ms per request
  json64    the same at concurrency 64
  stream16  20-chunk streams at concurrency 16 (wrk): streams/s, CPU ms per stream
  ttfb1     streams at concurrency 1: p50 time to first byte (added to direct's)
  slow      many slow streams: `--slow-streams` (1,000) started at once, each on its own
            connection, bounded by `--slow-deadline`; the provider waits 2 s, then sends
            20 chunks 50 ms apart (3 s a stream); streams/s (complete streams over the
            run's time), p50 total time, peak RSS during the run, streams complete
  rss       (not in the default set) RSS after 10k and after 100k JSON requests

CPU is the gateway's process tree's user + system time from /proc over the measured
window, divided by the requests completed in it; peak RSS is the tree's VmHWM before the
slow-stream scenario. Scenarios run target by target in turn (`--rounds` repeats them,
interleaved, and the table shows medians), so noise on a shared machine hits all alike.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import trio

from bench import procstat, targets, wrk
from bench.loadgen import Timings, run_load
from bench.streams import StreamTimings, run_streams
from bench.targets import Target

ALL_TARGETS = ("direct", "floor-hello", "floor-proxy", "before", "before-off", "before-obs", "before-traced",
               "before-log", "before-logtm", "before-pg", "ours", "ours-obs", "ours-off", "ours-traced",
               "ours-log", "ours-logtm", "ours-pg", "portkey", "litellm")
PG_TARGETS = ("ours-pg", "before-pg")  # each on a Postgres database of its own
TRACED = ("ours-traced", "ours-logtm")  # telemetry variants with tracing on
DEFAULT_SCENARIOS = ("c1", "json16", "json64", "stream16", "ttfb1", "slow")
STREAM_DIRECTIVE = "[fake chunks=20 gap=5]"  # paced: 16 streams take ~150/s direct
SLOW_DIRECTIVE = "[fake chunks=20 first=2000 gap=50]"
Metrics = dict[str, float]
SURFACES = {"chat": "/v1/chat/completions", "responses": "/v1/responses"}


def body(stream: bool, directive: str = "", *, responses: bool = False) -> bytes:
    """The 2 KB chat request (a system prompt and a user turn); with `responses`, the same
    as a unified (Responses-shaped) request for `/v1/responses`."""
    system = "You are a concise assistant for a benchmark. " * 20
    user = ("Summarise the following notes in one sentence. " + "notes " * 150)[:1000]
    payload: dict[str, object] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": system},
                     {"role": "user", "content": user + " " + directive}],
        "max_tokens": 32,
    }
    if responses:
        payload = {"model": payload["model"], "input": payload["messages"], "max_output_tokens": 32}
        if stream:
            payload["stream"] = True
        return json.dumps(payload).encode()
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return json.dumps(payload).encode()


def _responses(target: Target) -> bool:
    return target.urls[0].endswith("/v1/responses")


def _p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def _load(target: Target, payload: bytes, *, requests: int, concurrency: int) -> Timings:
    """`run_load` split evenly over the target's processes, merged."""
    parts: list[Timings] = []
    n = len(target.urls)

    async def one(url: str) -> None:
        parts.append(await run_load(url, payload, target.headers, requests=requests // n,
                                    concurrency=max(1, concurrency // n)))

    async with trio.open_nursery() as nursery:
        for url in target.urls:
            nursery.start_soon(one, url)
    merged = Timings()
    for part in parts:
        merged.first_byte += part.first_byte
        merged.total += part.total
        merged.errors += part.errors
        merged.elapsed = max(merged.elapsed, part.elapsed)
    return merged


async def _streams(target: Target, payload: bytes, count: int, deadline: float) -> StreamTimings:
    """`run_streams` split evenly over the target's processes, merged."""
    parts: list[StreamTimings] = []

    async def one(url: str) -> None:
        parts.append(await run_streams(url, payload, target.headers, count=count // len(target.urls),
                                       deadline=deadline))

    async with trio.open_nursery() as nursery:
        for url in target.urls:
            nursery.start_soon(one, url)
    merged = StreamTimings()
    for part in parts:
        merged.total += part.total
        merged.complete += part.complete
        merged.elapsed = max(merged.elapsed, part.elapsed)
    return merged


def load(target: Target, payload: bytes, **options: object) -> Timings:
    return trio.run(lambda: _load(target, payload, **options))  # type: ignore[arg-type]


class Bench:
    """The scenarios, each a method returning metrics for one target."""

    def __init__(self, args: argparse.Namespace, tmp: Path, pin_pg: dict[str, str] | None = None,
                 load_cpus: set[int] | None = None) -> None:
        self.args = args
        self._pin_pg = pin_pg or {}  # target -> its database, whose backends go on the load cores
        self._load_cpus = load_cpus or set()
        self.files: dict[tuple[str, bool], Path] = {}
        for kind, stream, directive in (("json", False, ""), ("stream", True, STREAM_DIRECTIVE),
                                        ("slow", True, SLOW_DIRECTIVE)):
            for responses in (False, True):
                file = tmp / f"{kind}{'-responses' if responses else ''}.json"
                file.write_bytes(body(stream, directive, responses=responses))
                self.files[kind, responses] = file

    def _body(self, target: Target, kind: str) -> bytes:
        return self.files[kind, _responses(target)].read_bytes()

    def _cpu(self, target: Target) -> float:
        return procstat.cpu_seconds(list(target.pids)) if target.pids else float("nan")

    def _wrk(self, target: Target, kind: str, connections: int) -> Metrics:
        file = self.files[kind, _responses(target)]
        wrk.run(target.urls, file, target.headers, connections=connections, seconds=self.args.warmup)
        if (url := self._pin_pg.get(target.name)) is not None:  # the connections the warm-up opened
            targets.pin_backends(url, self._load_cpus)
        pids = list(target.pids)
        before = procstat.cpu_split(pids) if pids else (float("nan"), float("nan"))
        result = wrk.run(target.urls, file, target.headers, connections=connections, seconds=self.args.seconds)
        after = procstat.cpu_split(pids) if pids else (float("nan"), float("nan"))
        system = after[1] - before[1]
        used = after[0] - before[0] + system
        per = 1000 / result.requests if result.requests else float("nan")
        return {"rate": result.req_s, "cpu_ms": used * per, "sys_ms": system * per,
                "p50_ms": result.p50_ms, "errors": float(result.errors)}

    def json16(self, target: Target) -> Metrics:
        return self._wrk(target, "json", 16)

    def json64(self, target: Target) -> Metrics:
        return self._wrk(target, "json", 64)

    def stream16(self, target: Target) -> Metrics:
        return self._wrk(target, "stream", 16)

    def c1(self, target: Target) -> Metrics:
        payload = self._body(target, "json")
        load(target, payload, requests=20 * len(target.urls), concurrency=len(target.urls))
        before = self._cpu(target)
        t = load(target, payload, requests=self.args.c1_requests, concurrency=1)
        if self.args.profile and self.args.profile_scenario == "c1" and target.name == self.args.profile_target:
            # profiled: one request at a time for as long as py-spy records (see _profile)
            until = time.monotonic() + self.args.warmup + self.args.seconds
            while time.monotonic() < until:
                more = load(target, payload, requests=self.args.c1_requests, concurrency=1)
                t.total += more.total
                t.errors += more.errors
        cpu = (self._cpu(target) - before) * 1000 / len(t.total) if t.total else float("nan")
        # CPU per request beside the latency: an added latency well above it is a wait
        return {"p50_ms": _p50(t.total) * 1000, "cpu_ms": cpu, "errors": float(t.errors)}

    def ttfb1(self, target: Target) -> Metrics:
        payload = self._body(target, "stream")
        load(target, payload, requests=5 * len(target.urls), concurrency=len(target.urls))
        t = load(target, payload, requests=self.args.c1_requests // 4, concurrency=1)
        return {"ttfb_ms": _p50(t.first_byte) * 1000, "p50_ms": _p50(t.total) * 1000, "errors": float(t.errors)}

    def slow(self, target: Target) -> Metrics:
        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.25):
                samples.append(procstat.rss_mib(list(target.pids)))

        sampler = threading.Thread(target=sample)
        if target.pids:
            sampler.start()
        before = self._cpu(target)
        payload, n = self._body(target, "slow"), self.args.slow_streams
        try:
            t = trio.run(lambda: _streams(target, payload, n, self.args.slow_deadline))
        finally:
            stop.set()
            if target.pids:
                sampler.join()
        return {"rate": t.complete / t.elapsed if t.elapsed else 0.0, "p50_s": _p50(t.total),
                "rss_mib": max(samples, default=float("nan")), "complete": float(t.complete),
                "of": float(n), "errors": float(n - t.complete), "elapsed_s": t.elapsed,
                "cpu_ms": (self._cpu(target) - before) * 1000 / t.complete if t.complete else float("nan")}

    def rss(self, target: Target) -> Metrics:
        payload = self._body(target, "json")
        out: Metrics = {}
        done = 0
        answered = 0
        for mark in (self.args.rss_first, self.args.rss_total):
            t = load(target, payload, requests=mark - done, concurrency=16)
            done = mark
            answered += len(t.total)  # a worker that failed stops: say how many were answered
            out[f"rss_{mark}"] = procstat.rss_mib(list(target.pids)) if target.pids else float("nan")
            out[f"answered_{mark}"] = float(answered)
            out["errors"] = out.get("errors", 0.0) + t.errors
        return out


def _variant_env(variant: str) -> dict[str, str]:
    """The environment of a telemetry variant of ours (bench/targets.py's docstring)."""
    if variant in TRACED:  # ours-obs with tracing on (to a collector that is not there)
        return {**targets.TELEMETRY_ENV["ours-obs"], **targets.unreachable_collector()}
    return dict(targets.TELEMETRY_ENV.get(variant, {}))


def _start(name: str, tmp: Path, provider: str, provider_pid: int, cpu: str | None,
           pg_url: str | None, compare: Path | None, path: str,
           budget_usd: str | None = None) -> tuple[Target, ExitStack]:
    stack = ExitStack()
    try:
        if name == "direct":
            target = targets.direct(provider, provider_pid)
        elif name in PG_TARGETS:  # two processes on one database; before-pg from --compare
            assert pg_url is not None and (compare is not None or name == "ours-pg")
            target = targets.ours(stack, tmp, provider, cpu, processes=2, database_url=pg_url, name=name,
                                  path=path, source=compare if name == "before-pg" and compare else targets.ROOT,
                                  budget_usd=budget_usd)
        elif name.startswith("before"):  # the --compare checkout, as ours or one of its variants
            assert compare is not None
            target = targets.ours(stack, tmp, provider, cpu, name=name, source=compare, path=path,
                                  extra_env=_variant_env("ours" + name.removeprefix("before")),
                                  budget_usd=budget_usd)
        elif name in ("ours", *TRACED, *targets.TELEMETRY_ENV):
            target = targets.ours(stack, tmp, provider, cpu, name=name, path=path, extra_env=_variant_env(name),
                                  budget_usd=budget_usd)
        elif name in ("floor-hello", "floor-proxy"):
            target = targets.floor(stack, tmp, provider, cpu, name.removeprefix("floor-"))
        elif name == "portkey":
            target = targets.portkey(stack, tmp, provider, cpu)
        else:
            target = targets.litellm(stack, tmp, provider, cpu)
    except BaseException:
        stack.close()
        raise
    return target, stack


def _machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (wrk_version.stdout or wrk_version.stderr).splitlines()[:1]
    return (f"{os.cpu_count()} cpus ({model}), Linux {platform.release()}, Python "
            f"{platform.python_version()}, {first[0].split(' [')[0] if first else 'wrk ?'}")


def _fmt(value: float | None, spec: str) -> str:
    if value is None or value != value:
        return "–"
    return format(value, spec)


COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    # header, scenario, metric, format
    ("req/s c=16", "json16", "rate", ".0f"),
    ("req/s c=64", "json64", "rate", ".0f"),
    ("CPU ms/req c=16", "json16", "cpu_ms", ".2f"),
    ("CPU ms/req c=64", "json64", "cpu_ms", ".2f"),
    ("+p50 c=1 ms", "c1", "added_ms", ".2f"),
    ("CPU ms/req c=1", "c1", "cpu_ms", ".2f"),
    ("streams/s c=16", "stream16", "rate", ".0f"),
    ("CPU ms/stream", "stream16", "cpu_ms", ".2f"),
    ("of it system ms", "stream16", "sys_ms", ".2f"),
    ("+TTFB c=1 ms", "ttfb1", "added_ms", ".2f"),
    ("peak RSS MB", "peak", "rss_mib", ".0f"),
    ("slow streams/s", "slow", "rate", ".0f"),
    ("slow p50 s", "slow", "p50_s", ".2f"),
    ("slow RSS MB", "slow", "rss_mib", ".0f"),
)


def _table(results: dict[str, dict[str, Metrics]], names: list[str], missing: dict[str, str]) -> str:
    direct = results.get("direct", {})
    for name in names:  # latency added to direct's
        got = results[name]
        if "c1" in got and "c1" in direct:
            got["c1"]["added_ms"] = got["c1"]["p50_ms"] - direct["c1"]["p50_ms"]
        if "ttfb1" in got and "ttfb1" in direct:
            got["ttfb1"]["added_ms"] = got["ttfb1"]["ttfb_ms"] - direct["ttfb1"]["ttfb_ms"]
    used = [c for c in COLUMNS if any(c[1] in results[n] for n in names)]
    lines = ["| target | " + " | ".join(c[0] for c in used) + " | slow complete |",
             "|---|" + "---|" * (len(used) + 1)]

    def cell(name: str, column: tuple[str, str, str, str]) -> float | None:
        if name == "direct" and column[2] in ("added_ms", "cpu_ms", "sys_ms", "rss_mib"):
            return None
        return results[name].get(column[1], {}).get(column[2])

    for name in names:
        slow = results[name].get("slow")
        done = f"{slow['complete']:.0f}/{slow['of']:.0f}" if slow else "–"
        lines.append(f"| {name} | " + " | ".join(_fmt(cell(name, c), c[3]) for c in used) + f" | {done} |")
    for mine, other in (("ours", "floor-proxy"), ("ours", "before"), ("ours-obs", "ours-off"), ("ours-off", "before"),
                        ("ours-traced", "ours-obs"), ("ours-traced", "ours-off"), ("before-traced", "before-obs"),
                        ("before-traced", "before-off"), ("ours-traced", "before-traced"), ("ours", "portkey"),
                        ("ours-logtm", "ours-log"), ("before-logtm", "before-log"), ("ours-logtm", "before-logtm"),
                        ("ours-log", "before-log"), ("ours", "litellm"), ("ours-pg", "before-pg"),
                        ("ours-pg", "portkey"), ("before-pg", "portkey"),
                        ("ours-pg", "litellm")):
        if mine not in names or other not in names:
            continue
        ratios = []
        for c in used:
            a, b = cell(mine, c), cell(other, c)
            ratios.append(f"{a / b:.2f}×" if a is not None and b and a == a and b == b else "–")
        lines.append(f"| {mine} / {other} | " + " | ".join(ratios) + " | |")
    for name, why in missing.items():
        lines.append(f"| {name} | " + " | ".join("–" for _ in used) + f" | {why} |")
    return "\n".join(lines)


def _errors(results: dict[str, dict[str, Metrics]]) -> list[str]:
    found = []
    for name, scenarios in results.items():
        for scenario, metrics in scenarios.items():
            if metrics.get("errors"):
                found.append(f"{name} {scenario}: {metrics['errors']:.0f} failed requests")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--targets",
        default=",".join(t for t in ALL_TARGETS if not t.startswith("before") and t not in ("ours-obs", "ours-off", "ours-traced",
                                                             "ours-log", "ours-logtm", "floor-hello", "floor-proxy")),
    )
    parser.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS))
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of wrk warm-up before each")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--c1-requests", type=int, default=100, help="JSON requests at c=1 (streams: 1/4)")
    parser.add_argument("--slow-streams", type=int, default=1000)
    parser.add_argument("--slow-deadline", type=float, default=40.0, help="bound on the slow scenario (s)")
    parser.add_argument("--rss-first", type=int, default=10_000)
    parser.add_argument("--rss-total", type=int, default=100_000)
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness for the whole bench (gateways included); negative needs root")
    parser.add_argument("--pg-on-load-cores", action="store_true",
                        help="pin the Postgres backends serving ours-pg / before-pg to the load cores "
                             "after each warm-up, so the gateway core runs the gateways alone")
    parser.add_argument("--compare", type=Path, help="another checkout of this gateway, run as"
                        " target `before` beside `ours` (before/after in one run)")
    parser.add_argument("--surface", choices=sorted(SURFACES), default="chat",
                        help="the route this gateway is loaded on (responses: /v1/responses,"
                        " stored streams; the direct baseline stays chat)")
    parser.add_argument("--budget-usd", help="give the key of ours / before targets this budget (USD"
                        " per month): a budgeted key's cost, e.g. 1000000 to stay far from its limit")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--profile", type=Path, help="record py-spy samples of a gateway during a scenario here")
    parser.add_argument("--profile-target", default="ours",
                        help="the target --profile samples (ours, ours-obs, ours-traced, ...)")
    parser.add_argument("--profile-scenario", default="json16",
                        help="the scenario --profile samples (json16, json64, stream16, slow, or c1: then"
                        " the c=1 run lasts as long as the samples are taken)")
    args = parser.parse_args()
    names = [n for n in args.targets.split(",") if n]
    if args.compare is not None and not any(n.startswith("before") for n in names):
        names.insert(names.index("ours") if "ours" in names else 0, "before")
    if args.compare is None:
        names = [n for n in names if not n.startswith("before")]
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = sorted(set(names) - set(ALL_TARGETS)) + sorted(
        set(scenarios) - {*DEFAULT_SCENARIOS, "rss"})
    if unknown:
        parser.error(f"unknown targets or scenarios: {unknown}")
    if not wrk.available() and any(s.startswith(("json", "stream")) for s in scenarios):
        parser.error("wrk is missing: run bench/competitors.sh wrk")

    cpus = sorted(os.sched_getaffinity(0))
    gateway_cpu, load_cpus = (str(cpus[0]), set(cpus[1:])) if len(cpus) > 1 else (None, set(cpus))
    os.sched_setaffinity(0, load_cpus)  # this process, the fake provider and wrk
    if args.nice:
        os.nice(args.nice)  # inherited by everything started from here
    missing = {n: why for n in names if (why := targets.missing(n))}
    names = [n for n in names if n not in missing]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"bench {stamp}: {_machine()}; gateways on cpu {gateway_cpu}, load on {sorted(load_cpus)}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        provider, provider_pid = targets.start_provider(stack, tmp)
        pg_urls = {n: stack.enter_context(targets.postgres_database()) for n in names if n in PG_TARGETS}
        started: dict[str, Target] = {}
        with ThreadPoolExecutor(len(names) or 1) as pool:  # LiteLLM alone takes ~30 s to start
            futures = {n: pool.submit(_start, n, tmp, provider, provider_pid, gateway_cpu, pg_urls.get(n),
                                       args.compare, SURFACES[args.surface], args.budget_usd) for n in names}
            for n, future in futures.items():
                try:
                    target, own = future.result()
                except (RuntimeError, OSError, subprocess.SubprocessError) as err:  # reported, not fatal
                    missing[n] = f"did not start: {str(err).splitlines()[0][:120]}"
                    continue
                stack.callback(own.close)
                started[n] = target
        names = [n for n in names if n in started]
        for n in names:
            print(f"- {n}: {started[n].version}", flush=True)
        bench = Bench(args, tmp, pg_urls if args.pg_on_load_cores else None, load_cpus)
        results: dict[str, dict[str, Metrics]] = {n: {} for n in names}
        rounds: dict[tuple[str, str], list[Metrics]] = {}
        for scenario in scenarios:
            if scenario == "slow":  # peak RSS of the ordinary scenarios, before the slow one
                for n in names:
                    if started[n].pids:
                        results[n]["peak"] = {"rss_mib": procstat.peak_rss_mib(list(started[n].pids))}
            for _ in range(args.rounds):
                for n in names:
                    run: Callable[[Target], Metrics] = getattr(bench, scenario)
                    profiler = None
                    if args.profile and scenario == args.profile_scenario and n == args.profile_target:
                        profiler = _profile(started[n], args)
                    began = time.monotonic()
                    rounds.setdefault((n, scenario), []).append(run(started[n]))
                    if profiler is not None:
                        profiler.join()
                    print(f"  {scenario:8} {n:8} {time.monotonic() - began:5.1f}s "
                          + " ".join(f"{k}={v:.2f}" for k, v in rounds[(n, scenario)][-1].items()), flush=True)
        for (n, scenario), runs in rounds.items():
            results[n][scenario] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for n in names:
            if "slow" not in scenarios and started[n].pids:
                results[n]["peak"] = {"rss_mib": procstat.peak_rss_mib(list(started[n].pids))}
        print(f"\nload average at the end {os.getloadavg()[0]:.1f} (other work on this machine skews"
              " req/s more than CPU ms per request)")
        print(_table(results, names, missing))
        if "rss" in scenarios:
            print("\nRSS after requests (MB): " + "; ".join(
                f"{n} " + ", ".join(f"{k[4:]}: {v:.0f} ({results[n]['rss'].get('answered_' + k[4:], 0):.0f} answered)"
                                    for k, v in results[n]["rss"].items() if k.startswith("rss"))
                for n in names if "rss" in results[n]))
        for line in _errors(results):
            print("errors: " + line)
        if args.json:
            args.json.write_text(json.dumps({"date": stamp, "machine": _machine(),
                                             "versions": {n: started[n].version for n in names},
                                             "results": results, "missing": missing,
                                             "rounds": {f"{n} {s}": runs for (n, s), runs in rounds.items()}},
                                            indent=2))


def _profile(target: Target, args: argparse.Namespace) -> threading.Thread:
    """py-spy on every gateway process of the target for the measured part of the profiled
    scenario: the first process's samples go to `--profile`, the others' beside it with
    `-1`, `-2`, ... before the suffix (ours-pg has two processes)."""
    spy = Path(sys.executable).parent / "py-spy"
    outputs = [args.profile if i == 0 else args.profile.with_name(f"{args.profile.stem}-{i}{args.profile.suffix}")
               for i in range(len(target.pids))]

    def record() -> None:
        time.sleep(args.warmup + 0.5)
        spies = [subprocess.Popen([str(spy), "record", "--pid", str(pid), "--duration", str(int(args.seconds) - 1),
                                   "--rate", "200", "--format", "raw", "--output", str(out), "--nonblocking"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for pid, out in zip(target.pids, outputs, strict=True)]
        for spy_proc in spies:
            spy_proc.wait()

    thread = threading.Thread(target=record)
    thread.start()
    return thread


if __name__ == "__main__":
    main()
