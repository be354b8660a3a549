"""End to end: an answer replayed for an `Idempotency-Key` (server/idempotent.py) has its
own log line (`replayed: true`, the original request's id), a SERVER span with
`umg.idempotent_replay` (continuing the caller's trace) and is counted in
`umg_idempotent_replays_total`; the request that first got the answer has the ordinary
line and span, and no run, row or attempt span is made for the replay.

A real gateway (SQLite, Mock provider) traced into an in-memory exporter, its log
captured as the JSON formatter writes it, `/metrics` parsed with the Prometheus parser.
"""

from __future__ import annotations

import io

from opentelemetry.trace import SpanKind

from tests.server.conftest import Running
from tests.server.test_e2e_idempotency import CHAT, chat, rows
from tests.server.test_e2e_telemetry import admin_key, log_lines, parsed, scrape, value
from tests.server.test_e2e_tracing import (
    CALLER_SPAN,
    CALLER_TRACE,
    TRACEPARENT,
    attrs,
    hex_trace,
    parent_of,
    traced,
)

__all__ = ["log_lines"]  # the fixture, re-used


async def test_a_replay_has_a_log_line_a_span_and_a_count(gateway: Running, log_lines: io.StringIO) -> None:
    exporter = traced(gateway.services)
    admin = await admin_key(gateway)
    before = value(await scrape(gateway, admin), "umg_idempotent_replays_total", surface="chat.completions")
    async with gateway.client() as client:
        first = await client.post(CHAT, json=chat(), headers={"idempotency-key": "k1"})
        again = await client.post(
            CHAT, json=chat(),
            headers={"idempotency-key": "k1", "x-request-id": "retry-1", "traceparent": TRACEPARENT},
        )  # fmt: skip
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    original = first.json()["gateway"]["request_id"]
    (row,) = await rows(gateway)
    assert row.request_id == original

    ordinary, replay = parsed(log_lines, "request")
    assert ordinary["request_id"] == original and "replayed" not in ordinary
    assert replay["replayed"] is True
    assert replay["original_request_id"] == original
    assert replay["client_request_id"] == "retry-1" == again.headers["x-request-id"]
    assert replay["request_id"].startswith("req_") and replay["request_id"] != original
    assert (replay["surface"], replay["status"], replay["http_status"]) == ("chat.completions", "replayed", 200)
    assert (replay["tenant"], replay["project"]) == ("t1", "p1")
    assert gateway.key.startswith(f"umg_live_{replay['key_prefix']}_")
    assert replay["level"] == "info"

    spans = exporter.get_finished_spans()
    (first_span,) = [s for s in spans if s.name == "chat.completions mock-fast"]
    (replay_span,) = [s for s in spans if s.name == "chat.completions replay"]
    assert len([s for s in spans if s.kind is SpanKind.CLIENT]) == 1  # the first request's attempt only
    assert attrs(first_span)["umg.idempotent_replay"] is False
    a = attrs(replay_span)
    assert replay_span.kind is SpanKind.SERVER
    assert hex_trace(replay_span) == CALLER_TRACE and parent_of(replay_span) == CALLER_SPAN
    assert a["umg.idempotent_replay"] is True
    assert a["umg.original_request_id"] == original
    assert a["umg.request_id"] == replay["request_id"]
    assert a["umg.client_request_id"] == "retry-1"
    assert (a["umg.endpoint"], a["umg.status"], a["http.response.status_code"]) == ("chat.completions", "replayed", 200)

    after = value(await scrape(gateway, admin), "umg_idempotent_replays_total", surface="chat.completions")
    assert after == before + 1


async def test_a_replayed_job_creation_is_logged_and_counted_as_jobs(
    gateway: Running, log_lines: io.StringIO
) -> None:
    admin = await admin_key(gateway)
    body = {"request": {"model": "mock-fast", "input": "hello"}}
    async with gateway.client() as client:
        first = await client.post("/v1/jobs", json=body, headers={"idempotency-key": "job-1"})
        again = await client.post("/v1/jobs", json=body, headers={"idempotency-key": "job-1"})
    assert first.status_code == again.status_code and first.status_code < 300, first.text
    assert again.json()["id"] == first.json()["id"]
    (replay,) = [line for line in parsed(log_lines, "request") if line.get("replayed")]
    assert replay["surface"] == "jobs" and replay["http_status"] == first.status_code
    assert replay["original_request_id"].startswith("req_")
    assert value(await scrape(gateway, admin), "umg_idempotent_replays_total", surface="jobs") == 1
