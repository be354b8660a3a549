"""Prometheus metrics: an observer (adapters/observe.py) that counts what the gateway does.

Owns: the metric names, their labels, and keeping the labels bounded. Each `Metrics` has
its own `CollectorRegistry` (no module globals: two apps in one process, as in tests,
count apart); `exposition()` is the text format `GET /metrics` answers.

Labels come only from bounded sets: the surface (a fixed list of endpoints), the
catalog's model names (any other name a client sends is `other`), provider labels and
deployment ids (from the configuration), failure kinds, statuses, and on the cost
counter the tenant and project (created by the operator with keys). Never a key id, a
request id or anything else a client chooses.

Money: `umg_cost_usd_total` is a float, as every Prometheus sample is; the ledger keeps
the exact Decimal figures, so use it for billing and this for dashboards.

Gauges read at scrape time (`refresh`): jobs by status (the queue depth is `queued`),
the ledger writer's queue (SQLite's group commit; 0 for Postgres, which writes inline).

Cost: a labelled metric's child is bound once per label set and kept (`Metrics.child`):
prometheus-client's `labels()` checks the values and takes a lock on every call, which
was most of what counting a request cost. The cache is as bounded as the labels are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from adapters.observe import (
    AttemptEnded,
    BreakerChanged,
    FirstChunk,
    JobRan,
    Observer,
    Refused,
    Replayed,
    RunFinished,
    RunOpened,
    RunWatch,
    WebhookSent,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
REFUSALS = {"rate_limited", "budget_exceeded"}  # ledger statuses counted as refusals
OTHER = "other"


class Metrics(Observer):
    def __init__(self, models: Iterable[str]) -> None:
        self.models = frozenset(models)
        self._children: dict[tuple[object, ...], Any] = {}  # (metric, *labels) -> its child
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "umg_requests", "Finished requests", ["surface", "model", "provider", "status"], registry=r
        )
        self.latency = Histogram(
            "umg_request_duration_seconds", "Request latency, arrival to ledger row",
            ["surface", "provider"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "umg_time_to_first_token_seconds", "Time to the first content",
            ["surface", "provider"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.overhead = Histogram(
            "umg_gateway_overhead_seconds", "Time spent in the gateway, excluding providers",
            ["surface"], buckets=OVERHEAD_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            "umg_tokens", "Tokens metered", ["model", "provider", "kind"], registry=r
        )
        self.cost = Counter(
            "umg_cost_usd", "Cost in USD (the ledger has the exact figures)",
            ["model", "provider", "tenant", "project"], registry=r,
        )  # fmt: skip
        self.attempts = Counter(
            "umg_upstream_attempts", "Provider attempts by outcome", ["provider", "outcome"], registry=r
        )
        self.failures = Counter(
            "umg_upstream_failures", "Failed provider attempts by kind", ["provider", "kind"], registry=r
        )
        self.retries = Counter("umg_retries", "Attempts retried on the same deployment", ["provider"], registry=r)
        self.fallbacks = Counter(
            "umg_fallbacks", "Attempts after which the run fell back to another deployment",
            ["provider"], registry=r,
        )  # fmt: skip
        self.refusals = Counter(
            "umg_refusals", "Requests refused: rate_limited, budget_exceeded, unauthenticated",
            ["reason"], registry=r,
        )  # fmt: skip
        self.breaker = Gauge(
            "umg_breaker_state", "Circuit per deployment: 0 closed, 1 half-open, 2 open",
            ["deployment"], registry=r,
        )  # fmt: skip
        self.breaker_changes = Counter(
            "umg_breaker_transitions", "Circuit transitions", ["deployment", "to"], registry=r
        )
        self.in_flight = Gauge("umg_in_flight_requests", "Requests being answered", registry=r)
        self.in_flight_streams = Gauge("umg_in_flight_streams", "Streamed requests being answered", registry=r)
        self.replays = Counter(
            "umg_idempotent_replays", "Answers replayed from an Idempotency-Key record", ["surface"], registry=r
        )
        self.jobs = Counter("umg_job_runs", "Job runs by the job's status after the run", ["status"], registry=r)
        self.jobs_by_status = Gauge("umg_jobs", "Jobs by status (queued: the queue depth)", ["status"], registry=r)
        self.webhooks = Counter(
            "umg_webhook_deliveries", "Webhook delivery attempts", ["outcome"], registry=r
        )
        self.ledger_queue = Gauge("umg_ledger_queue_depth", "Ledger rows waiting to be committed", registry=r)
        self.ledger_commit = Histogram(
            "umg_ledger_write_seconds", "Time to write a request's ledger row (commit included)",
            buckets=COMMIT_BUCKETS, registry=r,
        )  # fmt: skip

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, bound on first use and kept (see the module docstring)."""
        key = (metric, *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    # -- the observer ----------------------------------------------------------------------

    def model_label(self, model: str) -> str:
        return model if model in self.models else OTHER

    def run_opened(self, event: RunOpened) -> RunWatch:
        self.in_flight.inc()
        if event.stream:
            self.in_flight_streams.inc()
        return _Watch(self, event)

    def refused(self, event: Refused) -> None:
        self.child(self.refusals, "unauthenticated").inc()

    def replayed(self, event: Replayed) -> None:
        self.child(self.replays, event.endpoint).inc()

    def job_ran(self, event: JobRan) -> None:
        self.child(self.jobs, event.status).inc()

    def webhook_sent(self, event: WebhookSent) -> None:
        outcome = "delivered" if event.ok else ("gave_up" if event.gave_up else "failed")
        self.child(self.webhooks, outcome).inc()

    def breaker_changed(self, event: BreakerChanged) -> None:
        self.child(self.breaker, event.deployment).set(BREAKER_STATES.get(event.after, 2))
        self.child(self.breaker_changes, event.deployment, event.after).inc()

    # -- scrape ------------------------------------------------------------------------------

    def refresh(self, job_counts: dict[str, int], ledger_queue: int) -> None:
        for status, count in job_counts.items():
            self.child(self.jobs_by_status, status).set(count)
        self.ledger_queue.set(ledger_queue)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Watch(RunWatch):
    def __init__(self, metrics: Metrics, opened: RunOpened) -> None:
        self.m = metrics
        self.opened = opened
        self.model = metrics.model_label(opened.model)
        self.ttft: float | None = None

    def first_chunk(self, event: FirstChunk) -> None:
        self.ttft = event.ttft

    def attempt_ended(self, event: AttemptEnded) -> None:
        m, provider = self.m, event.provider
        outcome = "ok" if event.ok else (event.failure.value if event.failure else "cut")
        m.child(m.attempts, provider, outcome).inc()
        if event.failure is not None:
            m.child(m.failures, provider, event.failure.value).inc()
        if event.next == "retry":
            m.child(m.retries, provider).inc()
        elif event.next == "fallback":
            m.child(m.fallbacks, provider).inc()

    def run_finished(self, event: RunFinished) -> None:
        m, row, surface = self.m, event.row, self.opened.endpoint
        provider = row.provider or "none"
        m.in_flight.dec()
        if self.opened.stream:
            m.in_flight_streams.dec()
        m.child(m.requests, surface, self.model, provider, row.status).inc()
        if row.status in REFUSALS:
            m.child(m.refusals, row.status).inc()
        if row.latency_ms is not None:
            m.child(m.latency, surface, provider).observe(row.latency_ms / 1000)
        if self.ttft is not None:
            m.child(m.ttft, surface, provider).observe(self.ttft)
        m.child(m.overhead, surface).observe(event.overhead_ms / 1000)
        m.ledger_commit.observe(event.ledger_seconds)
        for kind, count in (
            ("input", row.input_tokens),
            ("cached_input", row.cached_input_tokens),
            ("output", row.output_tokens),
        ):
            if count:
                m.child(m.tokens, self.model, provider, kind).inc(count)
        if row.cost:
            m.child(m.cost, self.model, provider, row.tenant, row.project).inc(float(row.cost))
