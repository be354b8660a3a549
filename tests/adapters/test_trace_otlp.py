"""adapters/trace_otlp.py: the OTLP request it encodes is the SDK encoder's, byte for
byte, for the gateway's spans and the SDK's own; its exporter sends it to a collector."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from adapters.trace_otlp import OtlpExporter, encode
from adapters.tracing import Tracing

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Keep(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def sdk_bytes(spans: list[ReadableSpan]) -> bytes:
    return encode_spans(spans).SerializePartialToString()


def gateway_spans() -> list[ReadableSpan]:
    """A run's server and client spans, a failed one with its event, one continuing a
    remote parent with a tracestate, and a job's span linked to another."""
    keep = Keep()
    tracing = Tracing([keep])
    run = tracing.start("chat.completions gpt-4.1", "server", 1_000)
    attempt = tracing.child(run, "chat gpt-4.1", "client", 2_000)
    attempt.attributes.update({
        "gen_ai.operation.name": "chat", "umg.attempt": 1, "gen_ai.request.stream": False,
        "gen_ai.response.time_to_first_chunk": 0.25, "gen_ai.response.finish_reasons": ("stop",),
        "umg.failure_reason": "timeout", "server.port": 443, "umg.cost_usd": "0.00116",
    })
    attempt.fail("timeout", "the provider did not answer")
    tracing.end(attempt, 3_000)
    run.attributes.update({"gen_ai.request.model": "gpt-4.1", "umg.tenant": "t1", "umg.attempts": 2})
    tracing.end(run, 4_000)
    remote = tracing.start("chat.completions x", "server", 5_000,
                           parent={"traceparent": PARENT, "tracestate": "vendor=a,other=b"})
    remote.attributes["umg.tenant"] = "t1"  # the same attribute again: its bytes come once
    tracing.end(remote, 6_000)
    job = tracing.start("job.run gpt-4.1", "consumer", 7_000, linked={"traceparent": PARENT})
    tracing.end(job, 8_000)
    return keep.spans


def sdk_spans() -> list[ReadableSpan]:
    """The SDK's own spans: every attribute type, limits that drop some, two resources
    and three scopes (one with a version, attributes and a schema)."""
    found = InMemorySpanExporter()
    for service in ("one", "two"):
        provider = TracerProvider(resource=Resource.create({"service.name": service}),
                                  span_limits=SpanLimits(max_span_attributes=6))
        provider.add_span_processor(SimpleSpanProcessor(found))
        plain = provider.get_tracer("plain")
        versioned = provider.get_tracer("versioned", "1.2", "https://schema/1", {"scope.k": "v"})
        for tracer in (plain, versioned, plain):
            linked = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1),
                                 trace_state=TraceState([("k", "v")]))
            with tracer.start_as_current_span("outer", kind=SpanKind.PRODUCER,
                                              links=[], attributes={"n": -3}) as outer:
                outer.set_attributes({"b": True, "f": 1.5, "i": 0, "s": "", "ints": [1, 2, -1],
                                      "strs": ("a", "b"), "more": "dropped by the limit"})
                with tracer.start_as_current_span("inner") as inner:
                    inner.add_link(linked, {"why": "because"})
                    inner.add_event("happened", {"at": 3}, timestamp=10)
                    inner.set_status(Status(StatusCode.OK))
    return list(found.get_finished_spans())


def test_the_gateways_spans_encode_as_the_sdk_encodes_them() -> None:
    spans = gateway_spans()
    assert len(spans) == 4 and spans[0].events and spans[3].links
    assert spans[2].parent is not None and spans[2].parent.is_remote
    assert encode(spans) == sdk_bytes(spans)


def test_the_sdks_spans_encode_as_the_sdk_encodes_them() -> None:
    spans = sdk_spans()
    assert any(s.dropped_attributes for s in spans)
    assert encode(spans) == sdk_bytes(spans)
    request = ExportTraceServiceRequest.FromString(encode(spans))
    assert [len(r.scope_spans) for r in request.resource_spans] == [2, 2]  # equal scopes merged


def test_values_of_every_kind_and_one_of_none_encode_as_the_sdks(caplog: pytest.LogCaptureFixture) -> None:
    (span,) = gateway_spans()[:1]
    odd = ReadableSpan(
        name="odd", context=span.context, resource=span.resource, kind=SpanKind.INTERNAL,
        attributes={"big": 2**40, "negative": -(2**40), "none": None, "raw": b"\x00\x01",
                    "map": {"a": 1, "b": [True]}, "long": "x" * 300, "object": object(),
                    "huge": 2**64},
        start_time=1, end_time=2, instrumentation_scope=span.instrumentation_scope,
    )
    with caplog.at_level(logging.WARNING):
        mine = encode([odd])
    assert "object" in caplog.text and "huge" in caplog.text  # left out, said
    assert mine == sdk_bytes([odd])


class Collector(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self) -> None:  # http.server calls it by this name
        self.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # http.server's signature
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    Collector.received = []
    server = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1/traces"
    finally:
        server.shutdown()
        server.server_close()


def test_a_reachable_collector_gets_every_span_as_the_sdk_would_send_it(collector: str) -> None:
    spans = gateway_spans() + sdk_spans()
    exporter = OtlpExporter(endpoint=collector, timeout=5)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    (body,) = Collector.received
    assert body == sdk_bytes(spans)
    exporter.shutdown()
    assert exporter.export(spans) is SpanExportResult.FAILURE  # shut down: the SDK's answer
