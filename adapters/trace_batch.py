"""Batching the ended spans for an exporter without a thread of its own: the Trio side
only appends, a worker thread exports a whole batch at once.

Owns: `TrioBatch`, the span processor in front of each exporter (adapters/tracing.py),
and `BatchSchedule`, its sizes and delay (the standard `OTEL_BSP_*` variables,
read by adapters/config/tracing.py).

Why not the SDK's `BatchSpanProcessor`: per span it takes a deque, checks the process id
and an event, and its own thread wakes for every batch and for every schedule delay;
while its exporter is blocked (a collector that is down: the OTLP exporter retries a
batch for up to its timeout), a full queue logs a warning record per dropped span.

Rules:
- `on_end` runs on the Trio thread (where the gateway ends its spans): a span not sampled
  is ignored; one arriving while `max_queue_size` spans wait, or while the exporter is
  a `Backoff` in a pause (adapters/trace_export.py: the collector cannot be reached), is
  dropped and counted (`dropped`), nothing logged; otherwise it is appended to a plain
  list, no lock. So while the collector is down, spans are not kept for their batch to
  be handed to a worker thread and dropped there: the Trio thread only checks the clock.
- A run's spans come together (`on_end_records`: adapters/trace_spans.py hands them over
  at the run's end): one check and one `extend`; what does not fit in the queue is
  dropped and counted.
- `takes()` says whether a span ending now would wait (the same test as the drop's):
  adapters/trace_spans.py does not record a run that no batch would take when it opens
  (so while the collector is down nothing is kept for the run, not only its spans
  dropped at the end).
- The gateway's own spans wait as what they are (`on_end_record`: the ended
  `SpanRecord`, adapters/trace_records.py) and become the SDK's `ReadableSpan` only in
  the export, in the worker thread, through `build` (set by the `Tracing` that adopts
  this batch), and only when the exporter reads them: the batch is handed over as a
  sequence built on first access, so an exporter that drops a batch unread
  (adapters/trace_export.py's `Backoff` during a pause) never builds it. Until then a
  waiting span is one slotted record and its attribute dict, not the SDK's span with
  its context, status, events and resource references: less for Trio's thread to make
  per span and fewer objects for the garbage collector to walk while they wait.
- When `max_export_batch_size` spans wait and no export is under way, a Trio system task
  takes them and hands them to the exporter in ONE `trio.to_thread` call; it keeps
  taking full batches while there are some. A timer task, started by a span when none
  runs, hands over what waits every `schedule_delay` seconds and ends once nothing
  waits (so an idle gateway's clock has nothing to wake for). One export at a
  time: the exporter is never called from two threads at once.
- Called outside a Trio run (the SDK's own tracer from another thread), spans only wait:
  `force_flush` and `shutdown` export them.
- `shutdown` (from `Tracing.aclose`, in a worker thread, bounded by its timeout) refuses
  new spans, exports what waits in batches, then shuts the exporter down.
- An exporter that raises instead of returning FAILURE: the error is logged with its
  traceback and the batch counted as failed (`failed`); it must not end the Trio run
  (an exception out of a system task would).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import trio
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter

from adapters.trace_export import Backoff
from adapters.trace_records import SpanRecord

Waiting = ReadableSpan | SpanRecord
Build = Callable[[SpanRecord], ReadableSpan]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchSchedule:
    """Sizes and delay (adapters/config/tracing.py reads them from OTEL_BSP_*; the SDK's defaults)."""

    schedule_delay: float = 5.0  # seconds between the timer's hand-overs
    max_queue_size: int = 2048
    max_export_batch_size: int = 512


class TrioBatch(SpanProcessor):
    def __init__(self, exporter: SpanExporter, schedule: BatchSchedule | None = None) -> None:
        self.exporter = exporter
        self.schedule = schedule or BatchSchedule()
        self.dropped = 0  # spans refused: the queue was full, the exporter paused, or after shutdown
        self.failed = 0  # batches whose export raised
        self.build: Build | None = None  # a record's ReadableSpan (set by the Tracing that adopts this)
        self._waiting: list[Waiting] = []
        self._paused = exporter.paused if isinstance(exporter, Backoff) else None  # its pause drops
        self._exporting = False  # a system task is handing batches over
        self._timer_run: trio.lowlevel.TrioToken | None = None  # the run the timer lives in
        self._closed = False
        self._export_lock = threading.Lock()  # per batch, in worker threads: one export at a time
        self._take_lock = threading.Lock()  # per batch: the Trio side and shutdown both take

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        self._wait((span,))

    def on_end_record(self, record: SpanRecord) -> None:
        """An ended gateway span, built into the SDK's span only at its export."""
        if record.flags & 1:  # W3C sampled
            self._wait((record,))

    def on_end_records(self, records: Sequence[SpanRecord]) -> None:
        """The ended spans of one run (they share its sampling decision), taken at once."""
        if records and records[0].flags & 1:  # W3C sampled
            self._wait(records)

    def takes(self) -> bool:
        """Whether a span ending now would wait for its batch, not be dropped (the queue
        has room, the exporter is not in a pause, not shut down): the tracing observer
        asks at a run's opening, and records a run only if some batch would take it."""
        paused = self._paused
        return not (self._closed or len(self._waiting) >= self.schedule.max_queue_size
                    or (paused is not None and paused()))

    def _wait(self, spans: Sequence[Waiting]) -> None:
        waiting = self._waiting
        paused = self._paused
        room = self.schedule.max_queue_size - len(waiting)
        if self._closed or room <= 0 or (paused is not None and paused()):
            self.dropped += len(spans)
            return
        if len(spans) > room:
            self.dropped += len(spans) - room
            spans = spans[:room]
        waiting.extend(spans)
        if len(waiting) >= self.schedule.max_export_batch_size and not self._exporting:
            self._start(hand_over=True)
        elif self._timer_run is None:
            self._start(hand_over=False)

    def _start(self, *, hand_over: bool) -> None:
        """From the Trio thread: the full batches' hand-over and/or the timer, as system
        tasks of the current run (nothing outside a run: the spans wait)."""
        try:
            token = trio.lowlevel.current_trio_token()
        except RuntimeError:
            return
        if hand_over:
            self._exporting = True
            trio.lowlevel.spawn_system_task(self._hand_over, False)
        if self._timer_run is None:
            self._timer_run = token
            trio.lowlevel.spawn_system_task(self._timer, token)

    async def _timer(self, token: trio.lowlevel.TrioToken) -> None:
        """Every `schedule_delay`, hand over what waits; ends once nothing waits (the next
        span starts another), or with the run."""
        try:
            while self._waiting and not self._closed:
                await trio.sleep(self.schedule.schedule_delay)
                if self._waiting and not self._exporting:
                    self._exporting = True
                    await self._hand_over(True)
        finally:
            if self._timer_run is token:
                self._timer_run = None

    async def _hand_over(self, everything: bool) -> None:
        """Hand full batches (with `everything`, also a last short one) to the exporter,
        one worker-thread call each, until fewer wait."""
        size = self.schedule.max_export_batch_size
        try:
            while self._waiting and (everything or len(self._waiting) >= size):
                batch = self._take(size)
                await trio.to_thread.run_sync(self._export, batch, abandon_on_cancel=True)
        finally:
            self._exporting = False

    def _take(self, size: int) -> list[Waiting]:
        with self._take_lock:  # appends (at the end) need no lock: they move nothing here
            batch = self._waiting[:size]
            del self._waiting[:size]
        return batch

    def _export(self, batch: list[Waiting]) -> None:
        """In a worker thread: one batch to the exporter (built when it reads it)."""
        with self._export_lock:
            try:
                self.exporter.export(Built(batch, self.build))
            except Exception:  # logged, not swallowed: it must not end the Trio run
                log.exception("span export raised; %d spans lost", len(batch))
                self.failed += 1  # counted once told: whoever waits for the count sees the line

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export every waiting span now, in the caller's thread (not the Trio thread's
        job: it blocks on the exporter)."""
        while self._waiting:
            self._export(self._take(self.schedule.max_export_batch_size))
        return True

    def shutdown(self) -> None:
        self._closed = True
        self.force_flush()
        self.exporter.shutdown()


class Built(Sequence[ReadableSpan]):
    """A batch as the SDK's spans, the records among them built on first access (once);
    its length is known without building."""

    def __init__(self, batch: list[Waiting], build: Build | None) -> None:
        self._batch = batch
        self._build = build
        self._spans: list[ReadableSpan] | None = None

    def spans(self) -> list[ReadableSpan]:
        if self._spans is None:
            build = self._build
            found = []
            for span in self._batch:
                if isinstance(span, SpanRecord):
                    assert build is not None, "a record can only come from a Tracing, which sets build"
                    found.append(build(span))
                else:
                    found.append(span)
            self._spans = found
        return self._spans

    def __len__(self) -> int:
        return len(self._batch)

    @overload
    def __getitem__(self, index: int) -> ReadableSpan: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[ReadableSpan]: ...
    def __getitem__(self, index: int | slice) -> ReadableSpan | Sequence[ReadableSpan]:
        return self.spans()[index]

    def __iter__(self) -> Iterator[ReadableSpan]:
        return iter(self.spans())


__all__ = ["BatchSchedule", "Built", "TrioBatch"]
