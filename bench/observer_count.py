"""Instructions per run of the observers, in process, counted by callgrind: what the
request log, the metrics and tracing's recording cost the Trio thread, without the noise.

Owns: feeding the observers one answered run's records (bench/tracing_cost.py's
`one_run`: two spans, the attempt's `traceparent`) in a child process under
`valgrind --tool=callgrind`, once `--short` and once `--long` runs, and printing per setup
the difference over the extra runs (start-up and imports cancel out): `log` (the
request log, its line formatted and written to the null device through `JsonLines`, as `umg serve` writes it), `log-metrics` (with the
metrics: `ours-log` plus metrics), `log-metrics-tracing` (with the tracing observer on a
`Tracing` without processors: the spans recorded and handed over, nothing built or
exported: what tracing costs every request's task; the export is bench/export_cost.py's),
`log-metrics-tracing-paused` (tracing behind a batch whose collector is down, in
`Backoff`'s pause: the runs are not recorded, only their ids and traceparents made).
PYTHONHASHSEED is fixed so a setup counts the same from run to run.

    python -m bench.observer_count [--short 200] [--long 1200]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import trio
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from adapters.clock import Clock
from adapters.metrics import Metrics
from adapters.observe import fan_out
from adapters.request_log import RequestLog
from adapters.telemetry import JsonLines, configure_logging
from adapters.trace_batch import TrioBatch
from adapters.trace_export import Backoff
from adapters.trace_spans import TraceObserver
from adapters.tracing import Tracing
from bench import callgrind
from bench.tracing_cost import one_run

SETUPS = ("log", "log-metrics", "log-metrics-tracing", "log-metrics-tracing-paused")


class _Down(SpanExporter):
    """A collector that cannot be reached: every export fails."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.FAILURE


def _tracing(setup: str) -> Tracing | None:
    """No tracing; tracing without processors (every sampled run recorded); or tracing
    behind a `TrioBatch` whose `Backoff` is in its pause (a collector down: no run is
    recorded, each still sends its traceparent)."""
    if setup == "log-metrics-tracing":
        return Tracing([])
    if setup == "log-metrics-tracing-paused":
        down = Backoff(_Down(), first=3600.0)
        down.export([])  # failed: the pause begins
        return Tracing([TrioBatch(down)])
    return None


async def child(setup: str, runs: int) -> None:
    configure_logging("warning")
    null = JsonLines(open(os.devnull, "w"))  # as `umg serve` installs it (kept open for the run)
    lines = logging.getLogger("umg.request")
    lines.handlers[:], lines.propagate = [null], False
    lines.setLevel(logging.INFO)
    tracing = _tracing(setup)
    observer = fan_out(
        RequestLog(), Metrics(["gpt-4.1"]) if setup != "log" else None,
        TraceObserver(tracing, Clock()) if tracing is not None else None,
    )
    assert observer is not None
    for n in range(runs):
        one_run(observer, tracing)
        if n % 64 == 63:
            await trio.sleep(0)  # as between requests


def counted(setup: str, runs: int, tmp: Path) -> int:
    out = tmp / f"{setup}-{runs}.callgrind"
    return callgrind.count([sys.executable, "-m", "bench.observer_count", "--child", setup, "--runs", str(runs)], out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", type=int, default=200)
    parser.add_argument("--long", type=int, default=1200)
    parser.add_argument("--child", choices=SETUPS, help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        trio.run(child, args.child, args.runs)
        return
    previous: int | None = None
    with tempfile.TemporaryDirectory(prefix="umg-observers-") as tmp:
        for setup in SETUPS:
            per = (counted(setup, args.long, Path(tmp)) - counted(setup, args.short, Path(tmp))) / (args.long - args.short)
            more = f"  ({per - previous:+,.0f} over the one above)" if previous is not None else ""
            print(f"{setup:20s} {per:9,.0f} instructions per run{more}", flush=True)
            previous = per


if __name__ == "__main__":
    main()
