"""`python -m bench.stream_log`: what storing a stream's events costs, per event and per batch.

Owns: a micro-benchmark of the stored-stream path (adapters/stream_log.py) without HTTP:
`--streams` streams of `--events` events each (a Responses stream of 20 chunks is 26
events; these are ~300 bytes each) are framed by `NamedEventFramer` with ids and a
recorder, `--per-batch` streams at a time, and each group is written as one batch (what
the writer does every `flush_seconds`); the same framing without a recorder is the
baseline.
It prints the process CPU per stream of framing with and without recording (so the
difference is what recording adds on the stream's own task), then the CPU per stream of
the writer's batches (the storage thread included) and how many batches it took.
`--database-url URL` (default a temp SQLite).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import trio

from adapters.clock import Clock
from adapters.storage import open_storage
from adapters.stream_log import StreamLog, StreamSettings
from server.pipeline import NamedEventFramer

TEXT = "word " * 60  # ~300 bytes of data per event


class _Encoder:
    """A stand-in surface encoder: `events` delta events numbered from 0."""

    def __init__(self) -> None:
        self.seq = 0

    def frames(self) -> list[tuple[str, dict[str, Any]]]:
        self.seq += 1
        data = {"type": "response.output_text.delta", "sequence_number": self.seq - 1, "delta": TEXT}
        return [("response.output_text.delta", data)]


def _frame(framer: NamedEventFramer, encoder: _Encoder, events: int) -> None:
    for _ in range(events):
        framer._bytes(encoder.frames())  # the framing step a stream pays per event


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        storage = open_storage(args.database_url or f"sqlite:///{tmp}/bench.db")
        await storage.migrate()
        log = StreamLog(storage, Clock(), StreamSettings(flush_seconds=3600.0))  # we flush
        started = time.process_time()
        for _ in range(args.streams):
            framer = NamedEventFramer(_Encoder(), ids=True)  # type: ignore[arg-type]
            _frame(framer, _Encoder(), args.events)
        plain = time.process_time() - started
        recorded = written = 0.0
        batches = log.batches
        for first in range(0, args.streams, args.per_batch):
            started = time.process_time()
            for n in range(first, min(first + args.per_batch, args.streams)):
                recorder = log.open(f"resp_{n}", "bench")
                framer = NamedEventFramer(_Encoder(), ids=True, recorder=recorder)  # type: ignore[arg-type]
                _frame(framer, _Encoder(), args.events)
                recorder.end()
            recorded += time.process_time() - started
            started = time.process_time()
            await log.flush()  # one batch: what the writer does every flush_seconds
            written += time.process_time() - started
        print(f"{args.streams} streams x {args.events} events, {args.per_batch} streams per batch:")
        print(f"  framing            {plain * 1e6 / args.streams:8.1f} us CPU per stream")
        print(f"  framing + record   {recorded * 1e6 / args.streams:8.1f} us CPU per stream"
              f" (+{(recorded - plain) * 1e6 / args.streams / args.events:.2f} us per event)")
        print(f"  writer             {written * 1e6 / args.streams:8.1f} us CPU per stream"
              f" ({log.batches - batches} batch(es))")
        await log.close()
        await storage.close()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--events", type=int, default=26)
    parser.add_argument("--per-batch", type=int, default=5,
                        help="streams per batch (5: 50 streams/s at flush_seconds 0.1)")
    parser.add_argument("--database-url")
    trio.run(main, parser.parse_args())


if __name__ == "__main__":
    cli()
