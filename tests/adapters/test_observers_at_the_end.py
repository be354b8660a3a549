"""The metrics and the request log take a run's attempts and its ttft from `RunFinished`
(adapters/observe.py): their watches override `run_finished` alone."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import attrs
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.metrics import Metrics
from adapters.observe import AttemptEnded, RunFinished, RunOpened, RunWatch
from adapters.request_log import REQUESTS, RequestLog
from adapters.storage.records import UsageRecord
from adapters.telemetry import JsonFormatter
from core.model import FailureKind

OPENED = RunOpened("req_1", "req_1", "responses", "abc", "key_1", "t1", "p1", "gpt-4.1", False, "cost", {}, 1.0)
FAILED = AttemptEnded(1, "openai/gpt-4.1", "openai", False, FailureKind.SERVER_ERROR, "boom", "fallback", 1.2)
ANSWERED = AttemptEnded(2, "anthropic/claude", "anthropic", True, None, None, "answered", 1.5)
ROW = UsageRecord(
    id="use_1", request_id="req_1", at=datetime.now(UTC), tenant="t1", project="p1", key_id="key_1",
    endpoint="responses", model="gpt-4.1", provider="anthropic", deployment="anthropic/claude",
    input_tokens=10, output_tokens=5, cached_input_tokens=0, cache_write_tokens=0, reasoning_tokens=0,
    cost=Decimal("0.0001"), price_version="v", status="ok", error_code=None, latency_ms=600, ttft_ms=None,
    attempts=2, stream=False,
)
FINISHED = RunFinished(ROW, "cost", "stop", None, None, 1.2, 0.001, 1.6, attempts=(FAILED, ANSWERED), ttft=0.4)


def test_the_watches_override_run_finished_alone() -> None:
    for watch in (Metrics(["gpt-4.1"]).run_opened(OPENED), RequestLog().run_opened(OPENED)):
        overridden = {h for h in ("attempt_started", "first_chunk", "metered", "attempt_ended", "run_finished")
                      if getattr(type(watch), h) is not getattr(RunWatch, h)}
        assert overridden == {"run_finished"}


def test_metrics_count_the_attempts_and_the_ttft_from_the_end() -> None:
    metrics = Metrics(["gpt-4.1"])
    metrics.run_opened(OPENED).run_finished(FINISHED)
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }
    assert found[("umg_upstream_attempts_total", (("outcome", "server_error"), ("provider", "openai")))] == 1
    assert found[("umg_upstream_attempts_total", (("outcome", "ok"), ("provider", "anthropic")))] == 1
    assert found[("umg_upstream_failures_total", (("kind", "server_error"), ("provider", "openai")))] == 1
    assert found[("umg_fallbacks_total", (("provider", "openai"),))] == 1
    ttft = (("provider", "anthropic"), ("surface", "responses"))
    assert found[("umg_time_to_first_token_seconds_count", ttft)] == 1
    assert found[("umg_time_to_first_token_seconds_sum", ttft)] == pytest.approx(0.4)
    assert found[("umg_in_flight_requests", ())] == 0


@pytest.fixture
def written() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    REQUESTS.addHandler(handler)
    REQUESTS.setLevel(logging.INFO)
    REQUESTS.propagate = False
    try:
        yield out
    finally:
        REQUESTS.removeHandler(handler)
        REQUESTS.setLevel(logging.NOTSET)
        REQUESTS.propagate = True


def test_the_request_line_lists_the_attempts_from_the_end(written: io.StringIO) -> None:
    RequestLog().run_opened(OPENED).run_finished(FINISHED)
    (line,) = [json.loads(text) for text in written.getvalue().splitlines()]
    assert line["attempts"] == [
        {"attempt": 1, "deployment": "openai/gpt-4.1", "provider": "openai", "outcome": "server_error",
         "next": "fallback"},
        {"attempt": 2, "deployment": "anthropic/claude", "provider": "anthropic", "outcome": "ok",
         "next": "answered"},
    ]


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }


def test_runs_of_the_same_labels_add_to_the_same_series_and_a_series_shows_once_counted() -> None:
    metrics = Metrics(["gpt-4.1"])
    free = RunFinished(
        attrs.evolve(ROW, cost=Decimal("0"), input_tokens=0, tenant="t2"), "cost", "stop", None, None,
        1.2, 0.001, 1.6, attempts=(ANSWERED,), ttft=None,
    )
    metrics.run_opened(OPENED).run_finished(free)  # no cost, no input tokens, no ttft
    found = samples(metrics)
    assert not any(name.startswith(("umg_cost_usd", "umg_time_to_first_token")) for name, _ in found)
    assert not any(name == "umg_tokens_total" and ("kind", "input") in labels for name, labels in found)
    for _ in range(2):
        metrics.run_opened(OPENED).run_finished(FINISHED)
    found = samples(metrics)
    request = (("model", "gpt-4.1"), ("provider", "anthropic"), ("status", "ok"), ("surface", "responses"))
    assert found[("umg_requests_total", request)] == 3  # tenants apart, one series
    cost = (("model", "gpt-4.1"), ("project", "p1"), ("provider", "anthropic"), ("tenant", "t1"))
    assert found[("umg_cost_usd_total", cost)] == pytest.approx(0.0002)
    assert found[("umg_tokens_total", (("kind", "input"), ("model", "gpt-4.1"), ("provider", "anthropic")))] == 20
    assert found[("umg_upstream_attempts_total", (("outcome", "ok"), ("provider", "anthropic")))] == 3
    assert found[("umg_fallbacks_total", (("provider", "openai"),))] == 2
    assert found[("umg_in_flight_requests", ())] == 0
