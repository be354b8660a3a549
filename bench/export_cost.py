"""What encoding a batch of the gateway's spans for OTLP costs: the SDK's encoder beside
adapters/trace_otlp.py's, in instructions (callgrind) and in CPU time.

Owns: making `--spans` of the gateway's spans as a served run makes them (the tracing
observer fed one answered run's records: a SERVER and a CLIENT span per run, every
attribute set), building them into the SDK's spans as the batch's export does, and
encoding them `--batches` times with each encoder: `sdk` (`encode_spans` and
`SerializePartialToString`, what `OTLPSpanExporter.export` runs) and `ours`
(adapters/trace_otlp.py's `encode`). It prints, per encoder, the CPU microseconds per
span (median of `--rounds`) and, with valgrind installed, the instructions per span:
each encoder's process counted whole by callgrind, minus a process that makes the same
spans and encodes nothing (`none`), over the spans encoded. No network: what a batch
costs the gateway's core before it is sent (or dropped: a collector that is down costs
one such encode per `Backoff` pause, adapters/trace_export.py).

    python -m bench.export_cost [--spans 512] [--batches 4] [--rounds 5] [--no-callgrind]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import trio
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from adapters.clock import Clock
from adapters.trace_otlp import encode
from adapters.trace_spans import TraceObserver
from adapters.tracing import Tracing
from bench import callgrind
from bench.tracing_cost import one_run

ENCODERS: dict[str, Callable[[Sequence[ReadableSpan]], bytes]] = {
    "none": lambda spans: b"",
    "sdk": lambda spans: encode_spans(spans).SerializePartialToString(),
    "ours": encode,
}


class Keep(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def spans(count: int) -> list[ReadableSpan]:
    async def make() -> list[ReadableSpan]:
        keep = Keep()  # not a TrioBatch: `Tracing` builds each span as the batch's export would
        tracing = Tracing([keep])
        observer = TraceObserver(tracing, Clock())
        while len(keep.spans) < count:
            one_run(observer, tracing)
        return keep.spans[:count]
    return trio.run(make)


def child(encoder: str, count: int, batches: int) -> None:
    """Counted by callgrind: make the spans, encode them `batches` times."""
    batch = spans(count)
    for _ in range(batches):
        ENCODERS[encoder](batch)


def instructions(encoder: str, args: argparse.Namespace, tmp: Path) -> int:
    out = tmp / f"{encoder}.callgrind"
    return callgrind.count([sys.executable, "-m", "bench.export_cost", "--child", encoder, "--spans",
                            str(args.spans), "--batches", str(args.batches)], out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=512)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-callgrind", action="store_true")
    parser.add_argument("--child", choices=tuple(ENCODERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.spans, args.batches)
        return
    batch = spans(args.spans)
    sdk, ours = ENCODERS["sdk"](batch), ENCODERS["ours"](batch)
    print(f"{len(batch)} spans, {len(ours) / len(batch):.0f} bytes per span; same bytes: {sdk == ours}")
    counted: dict[str, int] = {}
    if not args.no_callgrind and shutil.which("valgrind") is not None:
        with tempfile.TemporaryDirectory(prefix="umg-export-") as tmp:
            counted = {e: instructions(e, args, Path(tmp)) for e in ENCODERS}
    for name in ("sdk", "ours"):
        run = ENCODERS[name]
        samples = []
        for _ in range(args.rounds):
            started = time.process_time()
            run(batch)
            samples.append((time.process_time() - started) / len(batch) * 1e6)
        line = f"{name:5s} {statistics.median(samples):6.1f} us CPU per span (median of {args.rounds})"
        if counted:
            per = (counted[name] - counted["none"]) / (args.spans * args.batches)
            line += f", {per:,.0f} instructions per span"
        print(line, flush=True)


if __name__ == "__main__":
    main()
