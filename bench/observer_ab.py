"""What each observer setup costs a served request, in one process, rounds interleaved.

Owns: serving the gateway in this process as the bench's `ours` target is served (SQLite,
live mode to the fake provider, a key with rpm and tpm, the GC tuned as `umg serve` tunes
it, the JSON log configured as `umg serve` configures it, stdout a file as in the bench),
pinned to core 0, loading it with wrk from core 1 for `--seconds`, and swapping the
driver's observer every `--slice` seconds, the modes in a fresh random order each turn:
every mode runs on the same process, database and connections, interleaved finely, so a
noisy machine hurts every mode alike (rounds of seconds each, mode after mode, did not
hold still to 100 us). Each mode's slices are summed in `--blocks` consecutive blocks;
per mode it prints the median over the blocks of the CPU microseconds per request (the
process's CPU time, its worker threads' too, over the requests opened in its slices), its
difference to `off`, the collector's runs per request, and each block's figure.

Modes: `off` (no observer), `noop` (a watch overriding every hook, doing nothing: the
cost of the records and the calls), `log` (the request log, each line written to the
file), `log-record` (the same with a filter on the handler that lets every record
through: the line then goes through a `LogRecord` and `Logger.handle`, as every line did
before the direct way of adapters/telemetry.py's `emit`), `log-quiet` (the request log's
watch, its lines below the level: none written),
`metrics`, `log-metrics` (the serve default at info), and with `--tracing` also
`log-metrics-tracing` (tracing to an OTLP endpoint nobody listens on, as `ours-logtm`).

`python -m bench.observer_ab [--seconds 40] [--slice 0.2] [--concurrency 16] [--modes ...] [--tracing]`
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import trio

from adapters.admin import create_key
from adapters.config.loader import load_settings
from adapters.observe import Observer, RunWatch, fan_out
from adapters.request_log import REQUESTS, RequestLog
from adapters.telemetry import configure_logging
from bench import wrk
from bench.run import body as request_body
from bench.targets import PROVIDER_KEY, free_port, start_provider
from server.gc_policy import tune_for_serving
from server.serve import serve
from server.services import build_services

MODES = ("off", "noop", "log", "log-record", "log-quiet", "metrics", "log-metrics")


class _NoopWatch(RunWatch):
    def attempt_started(self, event: Any) -> None:
        return None

    def first_chunk(self, event: Any) -> None:
        return None

    def metered(self, event: Any) -> None:
        return None

    def attempt_ended(self, event: Any) -> None:
        return None

    def run_finished(self, event: Any) -> None:
        return None


class _Noop(Observer):
    def run_opened(self, event: Any) -> RunWatch:
        return _NoopWatch()


def _every_record(record: logging.LogRecord) -> bool:
    return True


def _observers(services: Any, tracing: Any) -> dict[str, Observer | None]:
    log, metrics = RequestLog(), services.metrics
    made: dict[str, Observer | None] = {
        "off": None, "noop": _Noop(), "log": log, "log-record": log, "log-quiet": log, "metrics": metrics,
        "log-metrics": fan_out(log, metrics),
    }
    if tracing is not None:
        made["log-metrics-tracing"] = fan_out(log, metrics, tracing)
    return made


async def measure(provider: str, tmp: Path, args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    env = {"DATABASE_URL": f"sqlite:///{tmp}/ab.db", "LOG_LEVEL": "info",
           "OPENAI_API_KEY": PROVIDER_KEY, "OPENAI_BASE_URL": provider + "/v1"}
    if args.tracing:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
    settings = load_settings({**{k: v for k, v in os.environ.items()
                                 if not k.startswith(("UMG_", "OPENAI_", "OTEL_"))}, **env})
    services = await build_services(settings)
    tracing = None
    if args.tracing:
        from adapters.trace_spans import TraceObserver

        found = [o for o in getattr(services.gateway.driver.observer, "observers", ())
                 if isinstance(o, TraceObserver)]
        tracing = found[0] if found else None
    await services.storage.migrate()
    key, _ = await create_key(services.storage, services.clock, tenant="bench", project="bench",
                              rpm=1_000_000_000, tpm=1_000_000_000_000)
    tune_for_serving()
    made = _observers(services, tracing)
    modes = [m for m in args.modes.split(",") if m in made]
    body_file = tmp / "body.json"
    body_file.write_bytes(request_body(stream=False))
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    gc_runs = 0

    def counted(phase: str, info: dict[str, int]) -> None:
        nonlocal gc_runs
        if phase == "stop":
            gc_runs += 1

    gc.callbacks.append(counted)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(lambda task_status: serve(
            services, host="127.0.0.1", port=0, shutdown=stop.wait, workers=False, task_status=task_status))
        target = url + "/v1/chat/completions"
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

        def load(for_seconds: float) -> wrk.WrkResult:
            os.sched_setaffinity(0, {1})  # this worker thread, and so the wrk it starts
            return wrk.run((target,), body_file, headers, connections=args.concurrency, seconds=for_seconds)

        driver = services.gateway.driver
        (handler,) = logging.getLogger().handlers  # configure_logging's
        opened = 0
        run = driver.run

        def counting(ingress: Any) -> Any:
            nonlocal opened
            opened += 1
            return run(ingress)

        driver.run = counting  # type: ignore[method-assign]
        await trio.to_thread.run_sync(load, 1.0)  # warm up
        slices: dict[str, list[tuple[float, int, int]]] = {m: [] for m in modes}  # cpu, requests, gc runs
        loaded = trio.Event()

        async def loading() -> None:
            await trio.to_thread.run_sync(load, args.seconds)
            loaded.set()

        nursery.start_soon(loading)
        await trio.sleep(0.5)
        order = list(modes)
        while not loaded.is_set():
            random.shuffle(order)
            for mode in order:
                driver.observer = made[mode]
                REQUESTS.setLevel(logging.WARNING if mode == "log-quiet" else logging.NOTSET)
                handler.filters[:] = [_every_record] if mode == "log-record" else []
                gc_runs, count, cpu = 0, opened, time.process_time()
                await trio.sleep(args.slice)
                if loaded.is_set():
                    break
                slices[mode].append((time.process_time() - cpu, opened - count, gc_runs))
        for mode in modes:  # the slices in `args.blocks` consecutive blocks: one figure each
            taken = slices[mode]
            size = max(1, len(taken) // args.blocks)
            for at in range(0, size * args.blocks, size):
                block = taken[at:at + size]
                n = max(1, sum(r for _, r, _ in block))
                results[mode].append((sum(c for c, _, _ in block) / n * 1e6, sum(g for _, _, g in block) / n))
        stop.set()
    gc.callbacks.remove(counted)
    return results


def report(results: dict[str, list[tuple[float, float]]]) -> None:
    base = statistics.median(us for us, _ in results["off"]) if "off" in results else None
    for mode, samples in results.items():
        median = statistics.median(us for us, _ in samples)
        runs = statistics.median(g for _, g in samples)
        extra = f"  {median - base:+7.1f} us vs off" if base is not None else ""
        spread = ", ".join(f"{us:.0f}" for us, _ in samples)
        print(f"{mode:20s} median {median:7.1f} us CPU/request{extra}  gc runs/request {runs:.4f}  [{spread}]",
              file=sys.__stderr__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--blocks", type=int, default=5, help="blocks of slices, one figure each")
    parser.add_argument("--slice", type=float, default=0.2, help="seconds per mode, in turn")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--tracing", action="store_true", help="also log-metrics-tracing")
    args = parser.parse_args()
    if args.tracing and "log-metrics-tracing" not in args.modes:
        args.modes += ",log-metrics-tracing"
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sink = stack.enter_context((tmp / "stdout.log").open("w"))
        sys.stdout = sink  # the bench's gateway writes its lines to a file
        configure_logging("info")
        provider, _ = start_provider(stack, tmp)
        os.sched_setaffinity(0, {0})  # then the gateway's core, as bench.run pins it
        results = trio.run(measure, provider, tmp, args)
        sys.stdout = sys.__stdout__
    report(results)


if __name__ == "__main__":
    main()
