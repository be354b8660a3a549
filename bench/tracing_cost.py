"""What tracing's observer (adapters/trace_spans.py) costs one run, measured in process.

Feeds the observer the records of one answered run (opened, attempt started, first
chunk, metered, attempt ended, finished: two spans) `--runs` times, for each setup in
turn, `--rounds` times, and prints the median CPU microseconds per run (all threads, so
the batch processor's export thread counts). Setups: `bare` (a tracer provider with no
processor: making the spans and their attributes), `batch` (the gateway's `TrioBatch`
whose exporter takes everything: every span built and handed over), `unreachable`
(`TrioBatch` exporting over OTLP/HTTP to a port nobody listens on behind the gateway's
`Backoff`, as `serve` sets it up and `bench/run.py`'s `ours-traced` runs it),
`sdk-batch` and `sdk-unreachable` (the same two with the SDK's `BatchSpanProcessor`),
`unreachable-raw` (the SDK's processor without `Backoff`: every batch encoded and
retried), `sampled-out` (as `unreachable`, with `OTEL_TRACES_SAMPLER=always_off`: only
the decision, the ids and the `traceparent`). And the observers together as `serve`
attaches them (one `fan_out`, the request log formatted and written to the null device):
`log-metrics` (tracing off: what `ours-log` plus metrics runs) and `served` (the three:
`ours-logtm`); `served` minus `log-metrics` is tracing's share there. Each run also makes
the attempt's outgoing `traceparent`, as a provider call does.

    python -m bench.tracing_cost [--runs 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

import trio
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from adapters.clock import Clock
from adapters.config.tracing import TracingSettings
from adapters.metrics import Metrics
from adapters.observe import (
    AttemptEnded,
    AttemptStarted,
    FirstChunk,
    Metered,
    Observer,
    RunFinished,
    RunOpened,
    fan_out,
)
from adapters.request_log import RequestLog
from adapters.storage.records import UsageRecord
from adapters.telemetry import JsonFormatter, configure_logging
from adapters.trace_batch import TrioBatch
from adapters.trace_spans import TraceObserver
from adapters.tracing import Tracing, exporters
from core.model import Usage


class Dropping(SpanExporter):
    """Takes every span (reading the batch, so `TrioBatch` builds it), sends nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for _ in spans:
            pass
        return SpanExportResult.SUCCESS


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def processors(setup: str) -> list[SpanProcessor]:
    if setup == "bare":
        return []
    if setup == "batch":
        return [TrioBatch(Dropping())]
    if setup == "sdk-batch":
        return [BatchSpanProcessor(Dropping())]
    url = f"http://127.0.0.1:{unused_port()}/v1/traces"
    if setup == "unreachable-raw":
        return [BatchSpanProcessor(OTLPSpanExporter(endpoint=url))]
    found = exporters(TracingSettings(("otlp",), url))
    if setup == "sdk-unreachable":
        return [BatchSpanProcessor(e) for e in found]
    return [TrioBatch(e) for e in found]


ROW = UsageRecord(
    id="use_1", request_id="req_1", at=datetime.now(UTC), tenant="t1", project="p1", key_id="k1",
    endpoint="chat.completions", model="gpt-4.1", provider="openai", deployment="openai/gpt-4.1",
    input_tokens=500, output_tokens=20, cached_input_tokens=0, cache_write_tokens=0,
    reasoning_tokens=0, cost=Decimal("0.00116"), price_version="v1", status="ok", error_code=None,
    latency_ms=12, ttft_ms=None, attempts=1, stream=False,
)


def one_run(observer: Observer, tracing: Tracing | None) -> None:
    watch = observer.run_opened(RunOpened(
        "req_1", "req_1", "chat.completions", "abcd", "k1", "t1", "p1", "gpt-4.1", False, "cost",
        {}, 0.0,
    ))
    assert watch is not None
    watch.attempt_started(AttemptStarted(1, "openai/gpt-4.1", "openai", "gpt-4.1", "api.openai.com", 443, 0.0))
    if tracing is not None:
        tracing.outgoing()  # the provider call's traceparent
    watch.first_chunk(FirstChunk(1, 0.01, 0.01))
    watch.metered(Metered(1, Usage(500, 20), Decimal("0.00116")))
    ended = AttemptEnded(1, "openai/gpt-4.1", "openai", True, None, None, "answered", 0.02, "gpt-4.1", "stop")
    watch.attempt_ended(ended)
    watch.run_finished(RunFinished(ROW, "cost", "stop", None, "gpt-4.1", 1.0, 0.001, 0.02, attempts=(ended,), ttft=0.01))


def traced(setup: str) -> Tracing:
    """The tracing of `setup` (`sampled-out`: its sampler drops every run, read by the SDK
    from the variable as `serve` would; `served`: as `unreachable`)."""
    if setup != "sampled-out":
        return Tracing(processors("unreachable" if setup == "served" else setup))
    before = os.environ.get("OTEL_TRACES_SAMPLER")
    os.environ["OTEL_TRACES_SAMPLER"] = "always_off"
    try:
        return Tracing(processors("unreachable"))
    finally:
        if before is None:
            del os.environ["OTEL_TRACES_SAMPLER"]
        else:
            os.environ["OTEL_TRACES_SAMPLER"] = before


def main() -> None:
    trio.run(measure)  # the gateway's clock is Trio's


async def measure() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    configure_logging("warning")  # as `umg serve` does: the per-span queue-full warning is off
    null = logging.StreamHandler(open(os.devnull, "w"))  # kept open for the run
    null.setFormatter(JsonFormatter())
    requests = logging.getLogger("umg.request")  # the request log's lines, formatted, to nowhere
    requests.handlers[:], requests.propagate = [null], False
    requests.setLevel(logging.INFO)
    setups = ("bare", "batch", "unreachable", "sdk-batch", "sdk-unreachable", "unreachable-raw",
              "sampled-out", "log-metrics", "served")
    clock = Clock()
    observers: dict[str, tuple[Observer, Tracing | None]] = {}
    for setup in setups:
        tracing = None if setup == "log-metrics" else traced(setup)
        tracer = TraceObserver(tracing, clock) if tracing is not None else None
        if setup in ("log-metrics", "served"):
            both = fan_out(RequestLog(), Metrics(["gpt-4.1"]), tracer)
            assert both is not None
            observers[setup] = (both, tracing)
        else:
            assert tracer is not None
            observers[setup] = (tracer, tracing)
    samples: dict[str, list[float]] = {s: [] for s in setups}
    for _ in range(args.rounds):
        for setup in setups:
            observer, tracing = observers[setup]
            started = time.process_time()
            for n in range(args.runs):
                one_run(observer, tracing)
                if n % 64 == 63:
                    await trio.sleep(0)  # as between requests: TrioBatch's tasks may run
            samples[setup].append((time.process_time() - started) / args.runs * 1e6)
    for setup in setups:
        print(f"{setup:15s} median {statistics.median(samples[setup]):6.1f} us CPU/run "
              f"over {args.rounds} rounds of {args.runs}")


if __name__ == "__main__":
    main()
