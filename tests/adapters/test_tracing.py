"""Tracing's setup (adapters/tracing.py, `[tracing]` in adapters/config/tracing.py) on its own.

- Which exporters the standard `OTEL_*` variables and `[tracing]` choose, and that none is
  the default (then there is no `Tracing`, so nothing is paid for it).
- OpenTelemetry's context across Trio tasks: a nursery child starts with a copy of its
  parent's context and what it makes current stays its own.
- The BatchSpanProcessor with a collector that is not there: ending a span only queues
  it, the exporter backs off (`Backoff`, adapters/trace_export.py), and closing gives up
  after `shutdown_seconds` (all untimed).
- The gateway's own span records (adapters/trace_records.py): one sampling decision per
  run (OTEL_TRACES_SAMPLER), the SDK's span limits (OTEL_*_LIMIT).
- The console exporter writes each span as JSON on stdout.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import trio
import trio.testing
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from adapters.config.loader import load_settings
from adapters.config.tracing import TracingSettings
from adapters.config.values import ConfigError
from adapters.trace_export import Backoff
from adapters.tracing import Tracing, exporters

BASE = {"DATABASE_URL": "sqlite:///:memory:", "MOCK_MODE": "true"}


def tracing_of(tmp_path: Path | None = None, config: str = "", **env: str) -> TracingSettings:
    extra = dict(env)
    if tmp_path is not None and config:
        path = tmp_path / "umg.toml"
        path.write_text(config)
        extra["UMG_CONFIG"] = str(path)
    return load_settings({**BASE, **extra}).tracing


def test_tracing_is_off_by_default() -> None:
    settings = tracing_of()
    assert settings == TracingSettings(exporters=(), endpoint=None, capture_content=False)
    assert Tracing.from_settings(settings) is None


def test_an_otlp_endpoint_turns_otlp_on_with_the_traces_path() -> None:
    settings = tracing_of(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318/")
    assert settings.exporters == ("otlp",)
    assert settings.endpoint == "http://collector:4318/v1/traces"
    # the traces-only variable is the whole URL, and wins
    settings = tracing_of(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://traces:9999/custom",
    )
    assert (settings.exporters, settings.endpoint) == (("otlp",), "http://traces:9999/custom")


def test_otel_traces_exporter_chooses_and_none_or_sdk_disabled_turn_it_off() -> None:
    assert tracing_of(OTEL_TRACES_EXPORTER="console").exporters == ("console",)
    assert tracing_of(OTEL_TRACES_EXPORTER="console, otlp").exporters == ("otlp", "console")
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert tracing_of(OTEL_TRACES_EXPORTER="none", **endpoint).exporters == ()
    assert tracing_of(OTEL_SDK_DISABLED="true", **endpoint).exporters == ()
    with pytest.raises(ConfigError, match="zipkin"):
        tracing_of(OTEL_TRACES_EXPORTER="zipkin")


def test_tracing_table_and_the_content_capture_switches(tmp_path: Path) -> None:
    config = '[tracing]\nexporter = "otlp"\nendpoint = "http://c:4318/v1/traces"\ncapture_content = true\n'
    settings = tracing_of(tmp_path, config)
    assert settings == TracingSettings(("otlp",), "http://c:4318/v1/traces", True)
    assert tracing_of(tmp_path, config, UMG_TRACE_CAPTURE_CONTENT="false").capture_content is False
    on = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}
    assert tracing_of(**on).capture_content is True
    with pytest.raises(ConfigError, match="unknown keys"):
        tracing_of(tmp_path, "[tracing]\ncapture = true\n")
    with pytest.raises(ConfigError, match="capture_content"):
        tracing_of(tmp_path, '[tracing]\ncapture_content = "yes"\n')


async def test_trio_children_start_with_a_copy_of_the_parents_context() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing([SimpleSpanProcessor(exporter)])
    seen: dict[str, str] = {}
    parent = tracing.tracer.start_span("parent")
    token = otel_context.attach(trace.set_span_in_context(parent))

    async def child(name: str) -> None:
        seen[f"{name} starts under"] = tracing.outgoing()["traceparent"].split("-")[2]
        own = tracing.tracer.start_span(name)  # a child of the current (the parent)
        inner = otel_context.attach(trace.set_span_in_context(own))
        await trio.sleep(0.01)  # the sibling runs meanwhile
        seen[f"{name} sees"] = tracing.outgoing()["traceparent"].split("-")[2]
        otel_context.detach(inner)
        own.end()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child, "a")
            nursery.start_soon(child, "b")
        after = tracing.outgoing()["traceparent"].split("-")[2]
    finally:
        otel_context.detach(token)
        parent.end()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    parent_id = f"{parent.get_span_context().span_id:016x}"
    assert seen["a starts under"] == seen["b starts under"] == parent_id == after
    for name in ("a", "b"):
        span = spans[name]
        assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
        assert span.context is not None and seen[f"{name} sees"] == f"{span.context.span_id:016x}"
    assert tracing.outgoing() == {}  # nothing current once detached


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Spy(SpanExporter):
    """Counts the batches that reach `inner` and the threads they were exported from."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.batches = 0
        self.threads: set[int] = set()
        self.returned = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches += 1
        self.threads.add(threading.get_ident())
        try:
            return self.inner.export(spans)
        finally:
            self.returned.set()

    def shutdown(self) -> None:
        self.inner.shutdown()


class Stuck(SpanProcessor):
    """A span processor whose shutdown does not return until `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def shutdown(self) -> None:
        self.entered.set()
        self.release.wait()


def wait_for(check: Callable[[], bool]) -> None:
    """Until `check()` holds; the bound only turns a hang into a failure."""
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, "waited 60 s"
        time.sleep(0.01)


async def test_an_unreachable_collector_costs_requests_nothing_and_closing_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Untimed: ending a span only queues it (every export runs in the batch processor's
    thread, never the caller's); once an export has failed, `Backoff` drops the next
    batches without handing them to the OTLP exporter (one batch encoded and sent, not
    one per batch); and closing gives up after `shutdown_seconds` even when a processor
    never returns (Trio's clock jumps: no wall-clock bound)."""
    (wrapped,) = exporters(TracingSettings(exporters=("otlp",), endpoint="http://127.0.0.1:9/v1/traces"))
    assert isinstance(wrapped, Backoff) and isinstance(wrapped.inner, OTLPSpanExporter)
    url = f"http://127.0.0.1:{unused_port()}/v1/traces"
    spy = Spy(OTLPSpanExporter(endpoint=url, timeout=0.2))  # one try (and its quick retry)
    backoff = Backoff(spy, first=600)
    stuck = Stuck()
    tracing = Tracing([stuck, BatchSpanProcessor(backoff, schedule_delay_millis=10)], shutdown_seconds=5)
    for n in range(2000):
        tracing.end(tracing.start(f"s{n}", "server", n), n + 1)  # queued; the SDK's thread exports
    wait_for(spy.returned.is_set)  # the first batch failed: the collector is not there
    wait_for(lambda: backoff.dropped > 0)  # ...and the batches after it went nowhere
    assert spy.batches == 1
    assert spy.threads and threading.get_ident() not in spy.threads
    before = trio.current_time()
    await tracing.aclose()  # `stuck` does not return from its shutdown until released
    assert trio.current_time() - before == pytest.approx(5)  # gave up at shutdown_seconds
    wait_for(stuck.entered.is_set)  # the shutdown was under way, and is still blocked
    stuck.release.set()


def test_backoff_pauses_after_a_failure_doubles_and_ends_with_a_success() -> None:
    now = [0.0]
    results = [SpanExportResult.FAILURE, SpanExportResult.FAILURE, SpanExportResult.SUCCESS]

    class Scripted(SpanExporter):
        calls = 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            Scripted.calls += 1
            return results.pop(0)

    inner = Scripted()
    backoff = Backoff(inner, first=1.0, most=3.0, now=lambda: now[0])
    batch = [ReadableSpan("s")] * 4
    assert backoff.export(batch) is SpanExportResult.FAILURE and inner.calls == 1
    now[0] = 0.5
    assert backoff.export(batch) is SpanExportResult.FAILURE and inner.calls == 1  # paused: dropped
    assert backoff.dropped == 4
    now[0] = 1.0
    assert backoff.export(batch) is SpanExportResult.FAILURE and inner.calls == 2  # tried again
    now[0] = 2.9
    backoff.export(batch)
    assert inner.calls == 2  # the pause doubled (2 s)
    now[0] = 3.0
    assert backoff.export(batch) is SpanExportResult.SUCCESS and inner.calls == 3
    results.append(SpanExportResult.SUCCESS)
    assert backoff.export(batch) is SpanExportResult.SUCCESS and inner.calls == 4  # no pause after it
    assert backoff.dropped == 8


def test_a_run_is_sampled_once_and_its_spans_share_the_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the trace-id ratio sampler (OTEL_TRACES_SAMPLER) some runs are recorded, the
    others not; a run's attempt spans follow its own span, and a run sampled out still
    has ids (its traceparent goes upstream, flag unset)."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    exporter = InMemorySpanExporter()
    tracing = Tracing([SimpleSpanProcessor(exporter)])
    kept = 0
    for n in range(200):
        run = tracing.start("run", "server", n)
        attempt = tracing.child(run, "chat m", "client", n)
        assert attempt.recording is run.recording and attempt.trace_id == run.trace_id
        flags = attempt.headers()["traceparent"].rsplit("-", 1)[1]
        assert int(flags, 16) & 1 == (1 if run.recording else 0)
        tracing.end(attempt, n + 1)
        tracing.end(run, n + 2)
        kept += run.recording
    assert 40 < kept < 160  # about half (a fixed bound: 200 draws of a fair coin)
    spans = exporter.get_finished_spans()
    assert len(spans) == 2 * kept
    assert {s.parent.span_id for s in spans if s.kind is SpanKind.CLIENT} == {
        s.context.span_id for s in spans if s.kind is SpanKind.SERVER
    }


@pytest.mark.parametrize(
    ("sampler", "root", "under_sampled", "under_not_sampled"),
    [
        ("parentbased_always_on", True, True, False),  # the default
        ("parentbased_always_off", False, True, False),
        ("always_on", True, True, True),
        ("always_off", False, False, False),
    ],
)
def test_a_sampler_deciding_every_root_alike_is_asked_once_and_a_callers_flag_still_counts(
    monkeypatch: pytest.MonkeyPatch, sampler: str, root: bool, under_sampled: bool, under_not_sampled: bool,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    tracing = Tracing([])
    asked: list[object] = []
    real = tracing.provider.sampler.should_sample

    def counting(*args: object, **kwargs: object) -> object:
        asked.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tracing._sampler, "should_sample", counting)
    assert all(tracing.start("run", "server", n).recording is root for n in range(5))
    assert asked == []  # decided when the Tracing was made
    sampled = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    not_sampled = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"}
    assert tracing.start("run", "server", 1, parent=sampled).recording is under_sampled
    assert tracing.start("run", "server", 1, parent=not_sampled).recording is under_not_sampled
    assert len(asked) == 2  # a remote parent: the sampler is asked


def test_a_ratio_sampler_is_asked_for_every_root_with_no_current_span(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")  # every root dropped...
    tracing = Tracing([])
    current = trace.NonRecordingSpan(trace.SpanContext(7, 9, False, trace.TraceFlags(trace.TraceFlags.SAMPLED)))
    token = otel_context.attach(trace.set_span_in_context(current))  # ...even under a sampled current span
    try:
        runs = [tracing.start("run", "server", n) for n in range(5)]
    finally:
        otel_context.detach(token)
    assert not any(r.recording for r in runs)
    assert all(r.trace_id != 7 for r in runs)  # a run is a root of its own trace
    assert len({r.trace_id for r in runs}) == 5


def test_the_sdk_span_limits_still_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4")
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "2")
    exporter = InMemorySpanExporter()
    tracing = Tracing([SimpleSpanProcessor(exporter)])
    run = tracing.start("run", "server", 1)
    run.attributes.update({"a": "abcdefgh", "b": ("longer", "x"), "c": 3})
    tracing.end(run, 2)
    (span,) = exporter.get_finished_spans()
    assert dict(span.attributes or {}) == {"b": ("long", "x"), "c": 3}  # the oldest dropped
    assert span.dropped_attributes == 1
    assert (span.start_time, span.end_time) == (1, 2)


def test_the_console_exporter_writes_spans_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    (exporter,) = exporters(TracingSettings(exporters=("console",)))
    tracing = Tracing([SimpleSpanProcessor(exporter)])
    tracing.tracer.start_span("hello", attributes={"umg.endpoint": "responses"}).end()
    out = capsys.readouterr().out
    span = json.loads(out)
    assert span["name"] == "hello"
    assert span["attributes"] == {"umg.endpoint": "responses"}
    assert span["resource"]["attributes"]["service.name"] == "unified-model-gateway"
