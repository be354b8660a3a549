"""End to end: the spans of real requests (adapters/trace_spans.py, adapters/tracing.py).

Each test attaches tracing with an in-memory exporter to a real gateway (its own tracer
provider: the process-global one is never touched), makes real requests, and checks the
span tree and its attributes against the answer, the ledger row and what the fake
provider received: a plain call that continues the caller's `traceparent`, a stream
(time to first chunk, the `traceparent` the provider got), a fallback, a stream that
fails after its first chunk, a job (its run span linked to the creating request's
span), and that no span of a run holds the client's key, a provider key or the prompt.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from adapters.tracing import Tracing
from server.services import Services, attach_tracing
from tests.fakes import FakeProvider, Fault
from tests.server.conftest import Running, start_gateway
from tests.server.conftest import test_settings as mock_settings
from tests.server.live import PROVIDER_KEYS
from tests.server.test_e2e_failures import ask, fake, only_row, start_live
from tests.server.test_e2e_telemetry import log_lines, parsed

__all__ = ["fake", "log_lines"]  # the fixtures, re-used

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
PROMPT = "the secret plan is seventeen purple elephants"


def traced(services: Services, *, capture_content: bool = False) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    attach_tracing(services, Tracing([SimpleSpanProcessor(exporter)], capture_content=capture_content))
    return exporter


async def traced_live(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider
) -> tuple[Running, InMemorySpanExporter]:
    """A live-mode gateway in front of `fake`, traced into an in-memory exporter."""
    box: list[InMemorySpanExporter] = []
    gw = await start_live(nursery, tmp_path, fake, tweak=lambda s: box.append(traced(s)))
    return gw, box[0]


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def hex_span(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.span_id:016x}"


def parent_of(span: ReadableSpan) -> str | None:
    return f"{span.parent.span_id:016x}" if span.parent is not None else None


def tree(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The one request span and its attempt spans (in start order)."""
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.kind in (SpanKind.SERVER, SpanKind.CONSUMER)]
    attempts = sorted((s for s in spans if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    assert len(spans) == 1 + len(attempts), spans
    for attempt in attempts:
        assert parent_of(attempt) == hex_span(root)
        assert hex_trace(attempt) == hex_trace(root)
    return root, attempts


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_plain_call_continues_the_callers_trace_with_genai_and_gateway_attributes(
    gateway: Running,
) -> None:
    exporter = traced(gateway.services)
    async with gateway.client() as client:
        r = await client.post(
            "/v1/responses",
            json={"model": "mock-fast", "input": "hello there"},
            headers={"traceparent": TRACEPARENT, "tracestate": "vendor=1", "x-request-id": "cli-7"},
        )
    assert r.status_code == 200, r.text
    row = await only_row(gateway)
    root, (attempt,) = tree(exporter)

    assert root.kind is SpanKind.SERVER and root.name == "responses mock-fast"
    assert hex_trace(root) == CALLER_TRACE and parent_of(root) == CALLER_SPAN
    assert root.parent is not None and root.parent.is_remote
    assert root.status.status_code is StatusCode.UNSET
    a = attrs(root)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "mock-fast"
    assert a["gen_ai.request.stream"] is False
    assert a["gen_ai.provider.name"] == "mock" == row.provider
    assert a["gen_ai.response.model"] == r.json()["model"]
    assert a["gen_ai.usage.input_tokens"] == row.input_tokens + row.cached_input_tokens
    assert a["gen_ai.usage.output_tokens"] == row.output_tokens > 0
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["umg.request_id"] == row.request_id
    assert a["umg.client_request_id"] == "cli-7" == r.headers["x-request-id"]
    assert a["umg.endpoint"] == "responses"
    assert gateway.key.startswith(f"umg_live_{a['umg.key_prefix']}_")
    assert (a["umg.tenant"], a["umg.project"]) == ("t1", "p1")
    assert a["umg.routing.strategy"] == "cost"
    assert a["umg.deployment"] == row.deployment
    assert a["umg.attempts"] == 1
    assert a["umg.fell_back"] is False
    assert a["umg.cost_usd"] == r.json()["gateway"]["cost_usd"]
    assert a["umg.status"] == "ok"
    assert a["umg.idempotent_replay"] is False

    assert attempt.name == f"chat {attrs(attempt)['gen_ai.request.model']}"
    b = attrs(attempt)
    assert (b["gen_ai.provider.name"], b["umg.deployment"], b["umg.attempt"]) == ("mock", row.deployment, 1)
    assert "server.address" not in b  # the Mock is in-process
    assert b["gen_ai.usage.output_tokens"] == row.output_tokens
    assert b["gen_ai.response.finish_reasons"] == ("stop",)
    assert b["gen_ai.system"] == "mock"  # the older name, on attempt spans
    assert "umg.next" not in b and "umg.failure_reason" not in b  # it did not fail
    assert attempt.status.status_code is StatusCode.UNSET


async def test_the_request_log_line_names_the_span_and_both_carry_the_ledger_rows_id(
    gateway: Running, log_lines: io.StringIO
) -> None:
    exporter = traced(gateway.services)
    async with gateway.client() as client:
        r = await client.post(
            "/v1/responses", json={"model": "mock-fast", "input": "hi"}, headers={"traceparent": TRACEPARENT}
        )
    assert r.status_code == 200, r.text
    root, _ = tree(exporter)
    row = await only_row(gateway)
    (line,) = parsed(log_lines, "request")
    assert (line["trace_id"], line["span_id"]) == (CALLER_TRACE, hex_span(root))
    assert line["request_id"] == attrs(root)["umg.request_id"] == row.request_id


async def test_a_stream_span_lasts_to_the_last_chunk_and_the_provider_gets_the_attempts_traceparent(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider
) -> None:
    gw, spans = await traced_live(nursery, tmp_path, fake)
    fake.script(Fault(chunk_delay=0.02))
    async with gw.client() as client:
        r = await client.post(
            "/v1/responses", json=ask(text="one two three", stream=True),
            headers={"traceparent": TRACEPARENT},
        )
    assert r.status_code == 200, r.text
    assert "response.completed" in r.text
    row = await only_row(gw)
    root, (attempt,) = tree(spans)
    a, b = attrs(root), attrs(attempt)
    assert a["gen_ai.request.stream"] is True
    assert a["gen_ai.response.time_to_first_chunk"] == pytest.approx(row.ttft_ms / 1000, abs=0.002)
    assert 0 < b["gen_ai.response.time_to_first_chunk"] <= a["gen_ai.response.time_to_first_chunk"]
    # the span ends after the provider's last chunk: 4 chunks 20 ms apart at least
    assert attempt.end_time is not None and root.end_time is not None and attempt.start_time is not None
    assert attempt.end_time - attempt.start_time >= 60_000_000
    assert root.end_time >= attempt.end_time
    assert b["server.address"] == "127.0.0.1"
    assert b["server.port"] == int(fake.openai_base_url.rsplit(":", 1)[1].split("/")[0])
    assert b["gen_ai.provider.name"] == "openai" and b["gen_ai.request.model"] == "gpt-4.1"
    (sent,) = fake.requests
    assert sent.headers["traceparent"] == f"00-{CALLER_TRACE}-{hex_span(attempt)}-01"
    assert "tracestate" not in sent.headers  # none came in
    gw.stop.set()


async def test_a_caller_that_samples_out_gets_no_spans_but_its_trace_still_goes_upstream(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider
) -> None:
    gw, spans = await traced_live(nursery, tmp_path, fake)
    async with gw.client() as client:
        r = await client.post(
            "/v1/responses", json=ask(), headers={"traceparent": TRACEPARENT[:-2] + "00"}
        )
    assert r.status_code == 200, r.text
    assert spans.get_finished_spans() == ()  # the parent-based sampler follows the caller
    (sent,) = fake.requests
    version, trace_id, span_id, flags = sent.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", CALLER_TRACE, "00") and span_id != CALLER_SPAN
    gw.stop.set()


async def test_a_fallback_has_one_span_per_attempt_with_why_the_first_failed(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider
) -> None:
    gw, spans = await traced_live(nursery, tmp_path, fake)
    fake.script(Fault(status=500))
    async with gw.client() as client:
        r = await client.post("/v1/responses", json=ask(text="hello there"))
    assert r.status_code == 200, r.text
    root, (failed, answered) = tree(spans)
    assert hex_trace(root) != CALLER_TRACE and root.parent is None  # a new trace
    f, g = attrs(failed), attrs(answered)
    assert (f["gen_ai.provider.name"], f["umg.attempt"]) == ("openai", 1)
    assert failed.status.status_code is StatusCode.ERROR
    assert (f["umg.failure_reason"], f["error.type"]) == ("server_error", "server_error")
    assert (f["umg.next"], f["umg.fell_back"]) == ("fallback", True)
    assert [e.name for e in failed.events] == ["exception"]
    assert (g["gen_ai.provider.name"], g["umg.attempt"]) == ("anthropic", 2)
    assert answered.status.status_code is StatusCode.UNSET
    a = attrs(root)
    assert (a["umg.attempts"], a["umg.fell_back"], a["gen_ai.provider.name"]) == (2, True, "anthropic")
    assert root.status.status_code is StatusCode.UNSET
    # each call carried its own attempt's span as the parent
    first, second = fake.requests
    assert first.headers["traceparent"].split("-")[2] == hex_span(failed)
    assert second.headers["traceparent"].split("-")[2] == hex_span(answered)
    gw.stop.set()


async def test_a_stream_that_fails_after_its_first_chunk_records_the_error_on_both_spans(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider
) -> None:
    gw, spans = await traced_live(nursery, tmp_path, fake)
    fake.script(Fault(cut_after=3))
    async with gw.client() as client:
        r = await client.post("/v1/responses", json=ask(text="one two three four five", stream=True))
    assert r.status_code == 200  # the head was sent; the stream ends with an error event
    assert "output_text.delta" in r.text and "event: response.failed" in r.text
    row = await only_row(gw)
    assert row.status != "ok"
    root, (attempt,) = tree(spans)  # no fallback after the first chunk
    b = attrs(attempt)
    assert attempt.status.status_code is StatusCode.ERROR
    assert b["umg.failure_reason"] == "stream_cut" and b["umg.after_first_chunk"] is True
    assert b["umg.next"] == "gave_up"
    assert "gen_ai.response.time_to_first_chunk" in b
    a = attrs(root)
    assert root.status.status_code is StatusCode.ERROR
    assert a["umg.after_first_chunk"] is True
    assert a["error.type"] == row.error_code
    assert a["umg.status"] == row.status
    assert [e.name for e in root.events] == ["exception"]
    gw.stop.set()


async def test_a_jobs_run_is_a_span_linked_to_the_request_that_created_it(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    settings = mock_settings(tmp_path)
    gw = await start_gateway(nursery, settings)
    exporter = traced(gw.services)
    async with gw.client() as client:
        r = await client.post(
            "/v1/jobs",
            json={"request": {"model": "mock-fast", "input": "hello job"}},
            headers={"traceparent": TRACEPARENT, "prefer": "wait=10"},
        )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded"
    spans = exporter.get_finished_spans()
    (create,) = [s for s in spans if s.name == "jobs.create"]
    (run,) = [s for s in spans if s.kind is SpanKind.CONSUMER]
    (attempt,) = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert create.kind is SpanKind.SERVER
    assert hex_trace(create) == CALLER_TRACE and parent_of(create) == CALLER_SPAN
    assert run.name == "job.run mock-fast" and run.parent is None  # its own trace...
    (link,) = run.links  # ...linked to the request that created the job
    assert f"{link.context.trace_id:032x}" == CALLER_TRACE
    assert f"{link.context.span_id:016x}" == hex_span(create)
    assert parent_of(attempt) == hex_span(run)
    assert attrs(run)["umg.endpoint"] == "jobs" and attrs(run)["umg.status"] == "ok"
    assert attrs(create)["umg.job_id"] == r.json()["id"]
    assert (attrs(create)["umg.tenant"], attrs(create)["umg.project"]) == ("t1", "p1")
    # a job refused at creation (an unknown model): its creation span says so
    async with gw.client() as client:
        r = await client.post("/v1/jobs", json={"request": {"model": "no-such-model", "input": "x"}})
    assert r.status_code == 404, r.text
    (refused,) = [s for s in exporter.get_finished_spans() if s.name == "jobs.create" and "umg.job_id" not in attrs(s)]
    assert refused.status.status_code is StatusCode.ERROR
    assert attrs(refused)["error.type"] == r.json()["error"]["code"]
    gw.stop.set()


def span_texts(spans: Iterator[ReadableSpan] | tuple[ReadableSpan, ...]) -> list[str]:
    """Every string a span exports: name, attributes, status, events, links."""
    texts: list[str] = []
    for span in spans:
        texts += [span.name, span.status.description or "", json.dumps(attrs(span), default=str)]
        for event in span.events:
            texts += [event.name, json.dumps(dict(event.attributes or {}), default=str)]
        for link in span.links:
            texts.append(json.dumps(dict(link.attributes or {}), default=str))
    return texts


async def test_no_span_holds_a_key_or_the_prompt_with_content_capture_off(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider, log_lines: io.StringIO
) -> None:
    gw, spans = await traced_live(nursery, tmp_path, fake)
    # a fallback whose failure quotes the provider key, a stream cut, an answer
    fake.script(Fault(status=500, message="upstream broke for key {api_key}"), Fault(cut_after=2))
    async with gw.client() as client:
        r1 = await client.post("/v1/responses", json=ask(text=PROMPT))
        r2 = await client.post("/v1/responses", json=ask(text=PROMPT, stream=True))
        r3 = await client.post("/v1/chat/completions", json={
            "model": "gpt-4.1", "messages": [{"role": "user", "content": PROMPT}], "stream": True,
        })
    assert (r1.status_code, r2.status_code, r3.status_code) == (200, 200, 200)
    finished = spans.get_finished_spans()
    assert len([s for s in finished if s.kind is SpanKind.SERVER]) == 3
    texts = "\n".join(span_texts(finished))
    logged = log_lines.getvalue()
    assert len(parsed(log_lines, "request")) == 3 and logged.count('"trace_id"') >= 3
    assert "upstream broke for key" in texts  # the failure's message is there...
    for secret in (gw.key, *PROVIDER_KEYS.values(), PROMPT, "purple elephants"):
        assert secret not in texts  # ...but no key, and never the prompt
        assert secret not in logged  # nor in the log lines of the same run
    gw.stop.set()


async def test_content_capture_on_writes_the_prompt_as_input_messages(gateway: Running) -> None:
    exporter = traced(gateway.services, capture_content=True)
    async with gateway.client() as client:
        r = await client.post("/v1/responses", json={"model": "mock-fast", "input": PROMPT})
    assert r.status_code == 200, r.text
    root, _ = tree(exporter)
    messages = json.loads(attrs(root)["gen_ai.input.messages"])
    assert messages == [{"role": "user", "parts": [{"type": "text", "content": PROMPT}]}]
    assert gateway.key not in "\n".join(span_texts(exporter.get_finished_spans()))


async def test_a_client_that_leaves_mid_stream_ends_both_spans_as_cut(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider
) -> None:
    gw, spans = await traced_live(nursery, tmp_path, fake)
    fake.script(Fault(chunk_delay=0.2))
    async with gw.client() as client:
        # store: false, or the stored stream would go on detached to its end (stored streams)
        body = {**ask(text="one two three four five six", stream=True), "store": False}
        async with client.stream("POST", "/v1/responses", json=body) as r:
            async for line in r.aiter_lines():
                if "output_text.delta" in line:
                    break  # the first chunk arrived: go away
    with trio.fail_after(5):
        while len(spans.get_finished_spans()) < 2:
            await trio.sleep(0.01)
    root, (attempt,) = tree(spans)
    assert attrs(attempt)["umg.next"] == "cut"
    assert attempt.status.status_code is StatusCode.ERROR
    assert attrs(root)["umg.status"] == (await only_row(gw)).status == "client_closed"
    gw.stop.set()


async def test_without_tracing_no_trace_header_goes_to_the_provider(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider
) -> None:
    gw = await start_live(nursery, tmp_path, fake)
    assert gw.services.tracing is None
    async with gw.client() as client:
        r = await client.post("/v1/responses", json=ask(), headers={"traceparent": TRACEPARENT})
    assert r.status_code == 200, r.text
    (sent,) = fake.requests
    assert "traceparent" not in sent.headers and "tracestate" not in sent.headers
    gw.stop.set()
