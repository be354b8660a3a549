"""TrioBatch (adapters/trace_batch.py), the span processor in front of each exporter:
ending a span appends it on the Trio thread; a full batch goes to the exporter in one
worker-thread call; a full queue drops, counted; a timer hands over what waits; closing
flushes. Untimed: waits on threads are bounded only to turn a hang into a failure, and
the timer is checked on Trio's autojump clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
import trio
import trio.testing
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adapters.config.loader import load_settings
from adapters.config.tracing import TracingSettings
from adapters.config.values import ConfigError
from adapters.trace_batch import BatchSchedule, TrioBatch
from adapters.trace_export import Backoff
from adapters.trace_records import SpanRecord
from adapters.tracing import Tracing, exporters
from tests.adapters.test_tracing import Spy, unused_port


class Recording(SpanExporter):
    """Keeps each batch's span names and the thread it came in; `gate` holds exports."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.threads: set[int] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.gate.wait()
        self.threads.add(threading.get_ident())
        self.batches.append([s.name for s in spans])
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.closed = True

    def names(self) -> list[str]:
        return [name for batch in self.batches for name in batch]


async def until(check: object) -> None:
    """Until `check()` holds (exports run in worker threads); bounded by the wall clock
    only to fail instead of hanging."""
    assert callable(check)
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, "waited 60 s"
        await trio.sleep(0.005)


def end_spans(tracing: Tracing, names: Sequence[str]) -> None:
    for n, name in enumerate(names):
        tracing.end(tracing.start(name, "server", n), n + 1)


async def test_a_full_batch_goes_to_the_exporter_in_one_call_from_a_worker_thread() -> None:
    exporter = Recording()
    batch = TrioBatch(exporter, BatchSchedule(schedule_delay=3600, max_queue_size=100, max_export_batch_size=4))
    tracing = Tracing([batch])
    end_spans(tracing, [f"s{n}" for n in range(10)])
    assert exporter.batches == []  # ending only appended
    await until(lambda: len(exporter.batches) == 2)
    assert exporter.batches == [["s0", "s1", "s2", "s3"], ["s4", "s5", "s6", "s7"]]
    assert threading.get_ident() not in exporter.threads
    await tracing.aclose()  # the two left are flushed, the exporter shut down
    assert exporter.batches[2] == ["s8", "s9"] and exporter.closed


async def test_a_full_queue_drops_and_counts_while_an_export_is_stuck() -> None:
    exporter = Recording()
    exporter.gate.clear()  # the collector hangs
    batch = TrioBatch(exporter, BatchSchedule(schedule_delay=3600, max_queue_size=10, max_export_batch_size=4))
    tracing = Tracing([batch])
    end_spans(tracing, [f"s{n}" for n in range(25)])
    assert batch.dropped == 15  # ten may wait
    await trio.testing.wait_all_tasks_blocked()
    end_spans(tracing, ["late"])  # the first four are in the exporter: room for one more
    assert batch.dropped == 15
    exporter.gate.set()
    await until(lambda: len(exporter.names()) >= 8)
    await tracing.aclose()
    assert exporter.names() == [f"s{n}" for n in range(10)] + ["late"]
    end_spans(tracing, ["after"])  # closed: refused, counted
    assert batch.dropped == 16


async def test_a_runs_spans_are_taken_at_once_and_what_does_not_fit_is_dropped() -> None:
    exporter = Recording()
    exporter.gate.clear()
    batch = TrioBatch(exporter, BatchSchedule(schedule_delay=3600, max_queue_size=5, max_export_batch_size=100))
    tracing = Tracing([batch])
    run = tracing.start("run", "server", 1)
    spans = [tracing.child(run, f"attempt {n}", "client", 2) for n in range(3)] + [run]
    tracing.end_all(spans)
    assert batch.dropped == 0
    more = tracing.start("next", "server", 3)
    tracing.end_all([tracing.child(more, "a", "client", 4), tracing.child(more, "b", "client", 4), more])
    assert batch.dropped == 2  # one fitted (five may wait)
    out = tracing.start("out", "server", 5)
    tracing.end_all([out])
    assert batch.dropped == 3  # the queue is full
    exporter.gate.set()
    await tracing.aclose()
    assert exporter.names() == ["attempt 0", "attempt 1", "attempt 2", "run", "a"]


async def test_the_timer_hands_over_a_short_batch_after_the_schedule_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exporter = Recording()
    batch = TrioBatch(exporter, BatchSchedule(schedule_delay=5, max_queue_size=100, max_export_batch_size=50))
    tracing = Tracing([batch])
    started = trio.current_time()
    end_spans(tracing, ["a", "b", "c"])
    await trio.sleep(4.9)
    assert exporter.batches == []  # not before the delay
    await until(lambda: exporter.batches == [["a", "b", "c"]])
    assert trio.current_time() - started >= 5
    await trio.sleep(60)  # nothing waits: the timer has ended, nothing more is sent
    assert exporter.batches == [["a", "b", "c"]]
    end_spans(tracing, ["d"])  # a new span starts a new timer
    await until(lambda: len(exporter.batches) == 2)
    assert exporter.batches[1] == ["d"]


async def test_an_exporter_that_raises_is_logged_and_counted_and_the_run_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Raising(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            raise OSError("collector exploded")

    batch = TrioBatch(Raising(), BatchSchedule(schedule_delay=3600, max_queue_size=100, max_export_batch_size=2))
    tracing = Tracing([batch])
    end_spans(tracing, ["a", "b"])
    await until(lambda: batch.failed == 1)
    assert "collector exploded" in caplog.text
    end_spans(tracing, ["c", "d"])  # the processor still works
    await until(lambda: batch.failed == 2)


async def test_an_unreachable_collector_gets_one_batch_from_a_worker_thread() -> None:
    """As the gateway sets it up (Backoff in front of OTLP): the first full batch fails in
    a worker thread; the spans that end during the pause that follows are dropped as they
    end, never kept nor handed to a thread (the Trio thread only appended the first)."""
    (wrapped,) = exporters(TracingSettings(exporters=("otlp",), endpoint="http://127.0.0.1:9/v1/traces"))
    assert isinstance(wrapped, Backoff)
    url = f"http://127.0.0.1:{unused_port()}/v1/traces"
    spy = Spy(OTLPSpanExporter(endpoint=url, timeout=0.2))
    backoff = Backoff(spy, first=600)
    batch = TrioBatch(backoff, BatchSchedule(schedule_delay=3600, max_queue_size=2048, max_export_batch_size=512))
    tracing = Tracing([batch])
    end_spans(tracing, [f"s{n}" for n in range(512)])
    await until(backoff.paused)  # the first batch failed: nobody listens
    end_spans(tracing, [f"t{n}" for n in range(1024)])
    assert batch.dropped == 1024 and backoff.dropped == 0  # dropped as they ended
    await trio.sleep(0.05)
    assert spy.batches == 1 and backoff.dropped == 0  # nothing more went to the thread
    assert spy.threads and threading.get_ident() not in spy.threads
    await tracing.aclose()


class Keeping(SpanExporter):
    """Keeps every span it is given (reading the batch), answering `result`."""

    def __init__(self, result: SpanExportResult = SpanExportResult.SUCCESS) -> None:
        self.spans: list[ReadableSpan] = []
        self.result = result

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return self.result


def counting_builds(tracing: Tracing, batch: TrioBatch) -> list[int]:
    """The thread of every span `batch` builds for its exporter."""
    threads: list[int] = []

    def build(record: SpanRecord) -> ReadableSpan:
        threads.append(threading.get_ident())
        return tracing.readable(record)

    batch.build = build
    return threads


async def test_a_batch_builds_its_spans_in_the_export_as_a_processor_given_them_at_their_end_sees_them() -> None:
    kept, seen = Keeping(), InMemorySpanExporter()
    batch = TrioBatch(kept, BatchSchedule(schedule_delay=3600, max_queue_size=100, max_export_batch_size=2))
    tracing = Tracing([batch, SimpleSpanProcessor(seen)])
    built = counting_builds(tracing, batch)
    caller = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "k=v"}
    run = tracing.start("chat.completions gpt-4.1", "server", 10, parent=caller)
    run.attributes.update({"umg.request_id": "req_1", "gen_ai.usage.input_tokens": 6, "umg.fell_back": True})
    attempt = tracing.child(run, "chat gpt-4.1", "client", 11)
    attempt.attributes.update({"gen_ai.response.finish_reasons": ("stop",), "umg.attempt": 1})
    attempt.fail("server_error", "upstream said 500")
    tracing.end(attempt, 20)
    assert built == [] and len(seen.get_finished_spans()) == 1  # the batch only appended
    tracing.end(run, 30)
    await until(lambda: len(kept.spans) == 2)
    assert built and threading.get_ident() not in built  # built in the worker thread
    mine = [span.to_json() for span in kept.spans]
    assert mine == [span.to_json() for span in seen.get_finished_spans()]
    assert kept.spans[0].parent == kept.spans[1].context and kept.spans[1].parent is not None
    assert kept.spans[1].parent.span_id == 0xB7AD6B7169203331 and kept.spans[0].events[0].name == "exception"
    await tracing.aclose()


async def test_a_batch_dropped_by_backoff_during_its_pause_is_never_built() -> None:
    failing = Keeping(SpanExportResult.FAILURE)
    backoff = Backoff(failing, first=600, now=lambda: 0.0)
    batch = TrioBatch(backoff, BatchSchedule(schedule_delay=3600, max_queue_size=100, max_export_batch_size=4))
    tracing = Tracing([batch])
    built = counting_builds(tracing, batch)
    end_spans(tracing, [f"s{n}" for n in range(4)])
    await until(backoff.paused)  # the first batch was read (built) and failed
    end_spans(tracing, [f"t{n}" for n in range(8)])
    assert batch.dropped == 8  # during the pause: dropped as they end
    await trio.sleep(0.05)
    assert len(built) == 4 and len(failing.spans) == 4
    await tracing.aclose()


async def test_spans_wait_for_their_batch_again_once_the_pause_is_over() -> None:
    now = [0.0]
    kept = Keeping(SpanExportResult.FAILURE)
    backoff = Backoff(kept, first=10, now=lambda: now[0])
    batch = TrioBatch(backoff, BatchSchedule(schedule_delay=3600, max_queue_size=100, max_export_batch_size=4))
    tracing = Tracing([batch])
    end_spans(tracing, [f"s{n}" for n in range(4)])
    await until(backoff.paused)
    end_spans(tracing, ["dropped"])
    assert batch.dropped == 1
    now[0] = 11.0  # the pause is over: the next batch goes to the collector again
    kept.result = SpanExportResult.SUCCESS
    end_spans(tracing, [f"t{n}" for n in range(4)])
    await until(lambda: len(kept.spans) == 8)
    assert [s.name for s in kept.spans[4:]] == ["t0", "t1", "t2", "t3"] and not backoff.paused()
    assert batch.dropped == 1 and backoff.dropped == 0
    await tracing.aclose()


async def test_spans_not_sampled_are_ignored() -> None:
    exporter = Recording()
    batch = TrioBatch(exporter, BatchSchedule(schedule_delay=3600, max_queue_size=1, max_export_batch_size=1))
    ended = ReadableSpan("unsampled")  # no context: not sampled
    batch.on_end(ended)
    assert batch.dropped == 0
    batch.shutdown()
    assert exporter.batches == [] and exporter.closed


def test_the_schedule_comes_from_the_otel_bsp_variables() -> None:
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "250",
           "OTEL_BSP_MAX_QUEUE_SIZE": "64", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100"}
    settings = load_settings(env).tracing
    assert (settings.batch_delay, settings.batch_queue, settings.batch_size) == (0.25, 64, 64)
    tracing = Tracing.from_settings(settings)
    assert tracing is not None
    (processor,) = tracing._processors
    assert isinstance(processor, TrioBatch)
    assert processor.schedule == BatchSchedule(0.25, 64, 64)
    assert load_settings({}).tracing.batch_size == 512
    for bad in ("0", "-5", "fast", "1.5"):
        with pytest.raises(ConfigError, match="OTEL_BSP_MAX_QUEUE_SIZE"):
            load_settings({"OTEL_BSP_MAX_QUEUE_SIZE": bad})
