"""A run's spans are handed over undescribed (adapters/trace_spans.py's `RunSpans`) and
described when they are built (adapters/trace_records.py's `describe`): in the export's
worker thread behind a `TrioBatch`, saying exactly what a processor given them at their
end sees, and never at all when the batch drops them (the collector down)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from types import MethodType
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adapters.clock import Clock
from adapters.observe import (
    AttemptEnded,
    AttemptStarted,
    FirstChunk,
    Metered,
    RunFinished,
    RunOpened,
    RunWatch,
)
from adapters.storage.records import UsageRecord
from adapters.trace_batch import BatchSchedule, TrioBatch
from adapters.trace_export import Backoff
from adapters.trace_records import SpanRecord
from adapters.trace_spans import RunSpans, TraceObserver, Unsampled
from adapters.tracing import Tracing
from core.model import FailureKind, Usage
from tests.adapters.test_trace_batch import Keeping, until

ROW = UsageRecord(
    id="use_1", request_id="req_1", at=datetime.now(UTC), tenant="t1", project="p1", key_id="k1",
    endpoint="chat.completions", model="gpt-4.1", provider="anthropic", deployment="anthropic/claude",
    input_tokens=500, output_tokens=20, cached_input_tokens=0, cache_write_tokens=0, reasoning_tokens=0,
    cost=Decimal("0.00116"), price_version="v1", status="ok", error_code=None, latency_ms=12,
    ttft_ms=None, attempts=2, stream=False,
)


def opened(observer: TraceObserver, at: float) -> RunWatch | None:
    return observer.run_opened(RunOpened(
        "req_1", "cli_1", "chat.completions", "abcd", "k1", "t1", "p1", "gpt-4.1", False, "cost", {}, at,
    ))


def one_run(observer: TraceObserver, at: float) -> RunSpans:
    """A run whose first attempt fails and falls back, the second one answering."""
    watch = opened(observer, at)
    assert isinstance(watch, RunSpans)
    return rest_of_run(watch, at)


def rest_of_run(watch: RunSpans, at: float) -> RunSpans:
    """What `one_run` tells an opened run's watch."""
    watch.attempt_started(AttemptStarted(1, "openai/gpt-4.1", "openai", "gpt-4.1", "api.openai.com", 443, at))
    failed = AttemptEnded(1, "openai/gpt-4.1", "openai", False, FailureKind.SERVER_ERROR, "said 500",
                          "fallback", at + 0.01)
    watch.attempt_ended(failed)
    watch.attempt_started(AttemptStarted(2, "anthropic/claude", "anthropic", "claude", None, None, at + 0.01))
    watch.first_chunk(FirstChunk(2, 0.03, at + 0.03))
    watch.metered(Metered(2, Usage(500, 20), Decimal("0.00116")))
    answered = AttemptEnded(2, "anthropic/claude", "anthropic", True, None, None, "answered", at + 0.04,
                            "claude-x", "stop")
    watch.attempt_ended(answered)
    watch.run_finished(RunFinished(ROW, "cost", "stop", None, "claude", 1.0, 0.001, at + 0.05,
                                   attempts=(failed, answered), ttft=0.03))
    return watch


def without_ids(span: ReadableSpan) -> dict[str, Any]:
    """What a span says, its ids (random per run) left out."""
    assert span.context is not None
    return {
        "name": span.name, "kind": span.kind, "attributes": dict(span.attributes or {}),
        "status": (span.status.status_code, span.status.description),
        "events": [(e.name, dict(e.attributes or {}), e.timestamp) for e in span.events],
        "times": (span.start_time, span.end_time), "parent": span.parent is not None,
        "flags": span.context.trace_flags,
    }


async def test_a_batch_describes_a_runs_spans_in_its_worker_thread_as_a_processor_sees_them() -> None:
    clock = Clock()
    seen = InMemorySpanExporter()
    one_run(TraceObserver(Tracing([SimpleSpanProcessor(seen)]), clock), 5.0)
    kept = Keeping()
    batch = TrioBatch(kept, BatchSchedule(schedule_delay=3600, max_queue_size=100, max_export_batch_size=3))
    tracing = Tracing([batch])
    threads: list[int] = []

    def build(record: SpanRecord) -> ReadableSpan:
        threads.append(threading.get_ident())
        return tracing.readable(record)

    batch.build = build
    watch = one_run(TraceObserver(tracing, clock), 5.0)
    assert watch.span.attributes == {} and watch.span.describe is not None  # nothing built yet
    await until(lambda: len(kept.spans) == 3)
    assert threads and threading.get_ident() not in threads
    assert [without_ids(s) for s in kept.spans] == [without_ids(s) for s in seen.get_finished_spans()]
    run = kept.spans[2]
    assert run.attributes is not None and run.attributes["umg.fell_back"] is True
    assert run.attributes["gen_ai.response.time_to_first_chunk"] == 0.03
    assert run.attributes["umg.cost_usd"] == "0.00116" and run.attributes["umg.client_request_id"] == "cli_1"
    failed, answered = kept.spans[0], kept.spans[1]
    assert failed.attributes is not None and failed.attributes["umg.failure_reason"] == "server_error"
    assert failed.events[0].name == "exception" and failed.end_time == int(clock.epoch_at(5.01) * 1e9)
    assert answered.attributes is not None and answered.attributes["gen_ai.response.model"] == "claude-x"
    assert watch.span.describe is None  # described once
    await tracing.aclose()


async def test_spans_a_paused_batch_drops_are_never_described() -> None:
    failing = Keeping(SpanExportResult.FAILURE)
    backoff = Backoff(failing, first=600, now=lambda: 0.0)
    batch = TrioBatch(backoff, BatchSchedule(schedule_delay=3600, max_queue_size=100, max_export_batch_size=3))
    tracing = Tracing([batch])
    observer = TraceObserver(tracing, Clock())
    late = opened(observer, 1.0)  # recorded: opened before the pause
    assert isinstance(late, RunSpans)
    one_run(observer, 1.0)  # its three spans fill a batch: built, exported, failed
    await until(backoff.paused)
    assert len(failing.spans) == 3
    rest_of_run(late, 2.0)  # ends in the pause
    assert batch.dropped == 3  # dropped as they end
    assert late.span.describe is not None and late.span.attributes == {}
    assert all(record.describe is not None and record.attributes == {} for record in watch_spans(late))
    await tracing.aclose()


async def test_a_run_opened_while_no_batch_would_take_its_spans_is_not_recorded_but_still_propagates() -> None:
    now = [0.0]
    failing = Keeping(SpanExportResult.FAILURE)
    backoff = Backoff(failing, first=10, now=lambda: now[0])
    batch = TrioBatch(backoff, BatchSchedule(schedule_delay=3600, max_queue_size=100, max_export_batch_size=3))
    tracing = Tracing([batch])
    observer = TraceObserver(tracing, Clock())
    one_run(observer, 1.0)
    await until(backoff.paused)
    assert not batch.takes() and not tracing.takes()
    watch = opened(observer, 2.0)  # during the pause: nothing kept for its spans
    assert isinstance(watch, Unsampled) and tracing.unrecorded == 1
    watch.attempt_started(AttemptStarted(1, "openai/gpt-4.1", "openai", "gpt-4.1", "api.openai.com", 443, 2.0))
    sent = tracing.outgoing()["traceparent"]
    assert sent.startswith(f"00-{watch.span.trace_hex}-") and int(sent[-2:], 16) & 1  # still sampled
    assert sent.split("-")[2] != watch.span.span_hex  # the attempt's own span id
    watch.attempt_ended(AttemptEnded(1, "openai/gpt-4.1", "openai", True, None, None, "answered", 2.1))
    assert tracing.outgoing() == {}  # carried only for the call
    assert batch.dropped == 0 and failing.spans and len(failing.spans) == 3  # nothing handed over
    now[0] = 11.0  # the pause is over: runs are recorded again
    assert batch.takes() and isinstance(opened(observer, 3.0), RunSpans)
    assert tracing.unrecorded == 1
    await tracing.aclose()


async def test_a_run_opened_while_the_queue_is_full_is_not_recorded() -> None:
    gate = Keeping()
    batch = TrioBatch(gate, BatchSchedule(schedule_delay=3600, max_queue_size=3, max_export_batch_size=50))
    tracing = Tracing([batch])
    observer = TraceObserver(tracing, Clock())
    one_run(observer, 1.0)  # three spans: the queue is full (its batch not full, so they wait)
    assert not batch.takes() and isinstance(opened(observer, 2.0), Unsampled)
    assert tracing.unrecorded == 1
    await tracing.aclose()
    assert len(gate.spans) == 3


def test_a_tracing_with_another_processor_or_none_records_every_sampled_run() -> None:
    assert Tracing([SimpleSpanProcessor(InMemorySpanExporter())]).takes()
    assert Tracing([]).takes()


def watch_spans(watch: RunSpans) -> Sequence[SpanRecord]:
    """The attempt records a run kept beside its attempts."""
    return watch._spans


async def test_a_waiting_span_keeps_neither_the_run_nor_its_parsed_request() -> None:
    batch = TrioBatch(Keeping(), BatchSchedule(schedule_delay=3600, max_queue_size=100, max_export_batch_size=50))
    tracing = Tracing([batch])
    watch = one_run(TraceObserver(tracing, Clock()), 1.0)
    describe = watch.span.describe
    assert isinstance(describe, MethodType)
    kept = gc.get_referents(describe.__self__)
    assert any(isinstance(value, RunFinished) for value in kept)  # what it describes from
    assert not any(isinstance(value, (RunOpened, RunSpans, SpanRecord)) for value in kept)
    await tracing.aclose()
