"""How span export behaves while the collector cannot be reached: it backs off.

Owns: `Backoff`, an exporter in front of another (the OTLP one). The OTLP exporter
already retries one batch with growing waits (about 7 s over its 10 s timeout) and then
gives it up; behind a `BatchSpanProcessor` the next batch is taken at once, encoded to
protobuf again and retried again, so a collector that is down costs an encode and a
round of retries per batch for as long as it is down. `Backoff` drops the batches that
come within a pause after a failed export, without encoding them: the pause starts at
`first` seconds and doubles with each failure, up to `most`; one export that succeeds
ends it. Spans dropped so are counted (`dropped`); the inner exporter has already
logged why the export failed. `paused()` says whether a pause is under way, so the
batch in front (adapters/trace_batch.py) drops a span ending then at once instead of
keeping it until its batch reaches this exporter only to be dropped here.

It runs in the batch processor's worker thread: its time is `adapters.clock.monotonic`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from adapters.clock import monotonic


class Backoff(SpanExporter):
    def __init__(
        self, inner: SpanExporter, *, first: float = 1.0, most: float = 60.0,
        now: Callable[[], float] = monotonic,
    ) -> None:
        self.inner = inner
        self.first = first
        self.most = most
        self.dropped = 0  # spans dropped during pauses
        self._now = now
        self._pause = 0.0
        self._resume_at = 0.0

    def paused(self) -> bool:
        """Whether an export now would be dropped (read from the Trio thread as well)."""
        return bool(self._pause) and self._now() < self._resume_at

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.paused():
            self.dropped += len(spans)
            return SpanExportResult.FAILURE
        result = self.inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            self._pause = 0.0
        else:
            self._pause = min(self.most, self._pause * 2 if self._pause else self.first)
            self._resume_at = self._now() + self._pause
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


__all__ = ["Backoff"]
