"""Tracing's setup (adapters/tracing.py, `[tracing]` in adapters/config.py) on its own.

- Which exporters the standard `OTEL_*` variables and `[tracing]` choose, and that none is
  the default (then there is no `Tracing`, so nothing is paid for it).
- OpenTelemetry's context across Trio tasks: a nursery child starts with a copy of its
  parent's context and what it makes current stays its own.
- The BatchSpanProcessor with a collector that never answers: ending a span never waits
  for an export, and closing gives up after `shutdown_seconds`.
- The console exporter writes each span as JSON on stdout.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adapters.config import ConfigError, TracingSettings, load_settings
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


class Stalled(SpanExporter):
    """The OTLP exporter to a collector that never answers: each export waits at `gate`
    (opened when the test is over), then goes to the OTLP exporter. Records
    the threads it was called on; on the test's own thread it does not wait (it would
    hang the test): it returns at once, and the test fails on `threads`."""

    def __init__(self, inner: SpanExporter, test_thread: int) -> None:
        self.inner = inner
        self.test_thread = test_thread
        self.threads: set[int] = set()
        self.exporting = threading.Event()  # an export has begun (and waits at the gate)
        self.gate = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.threads.add(threading.get_ident())
        if threading.get_ident() == self.test_thread:
            return SpanExportResult.FAILURE
        self.exporting.set()
        self.gate.wait()
        return self.inner.export(spans)

    def shutdown(self) -> None:
        self.inner.shutdown()


async def test_an_unreachable_collector_costs_requests_nothing_and_closing_gives_up() -> None:
    """Untimed: ending spans never waits for an export (they are all ended while the
    first export is stuck), and closing gives up on an export that never ends."""
    settings = TracingSettings(exporters=("otlp",), endpoint=f"http://127.0.0.1:{unused_port()}/v1/traces")
    (otlp,) = exporters(settings)
    exporter = Stalled(otlp, threading.get_ident())
    tracing = Tracing([BatchSpanProcessor(exporter, schedule_delay_millis=10)], shutdown_seconds=0.2)
    try:
        tracing.tracer.start_span("first").end()  # queued; the SDK's thread exports
        assert threading.get_ident() not in exporter.threads, "a span's end exported in place"
        with trio.fail_after(60):  # a hang guard, not a speed check
            await trio.to_thread.run_sync(exporter.exporting.wait)  # ... and is stuck in it
        # every span ends while that export is stuck: each is only queued (or dropped
        # when the queue is full); none waits for the export, none exports in place
        for n in range(2000):
            tracing.tracer.start_span(f"s{n}").end()
        assert exporter.threads and threading.get_ident() not in exporter.threads
        with trio.fail_after(60):  # a hang guard: without giving up, aclose never returns
            await tracing.aclose()  # gives up after shutdown_seconds: the export is still stuck
    finally:
        otlp.shutdown()  # so the abandoned export, let through, ends at once (no retries)
        exporter.gate.set()


def test_the_console_exporter_writes_spans_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    (exporter,) = exporters(TracingSettings(exporters=("console",)))
    tracing = Tracing([SimpleSpanProcessor(exporter)])
    tracing.tracer.start_span("hello", attributes={"umg.endpoint": "responses"}).end()
    out = capsys.readouterr().out
    span = json.loads(out)
    assert span["name"] == "hello"
    assert span["attributes"] == {"umg.endpoint": "responses"}
    assert span["resource"]["attributes"]["service.name"] == "unified-model-gateway"
