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

Cost: the numbers are plain counters and bucket arrays per label set, updated on the
Trio thread without locks and rendered by a prometheus-client `Collector` only when
scraped (adapters/metric_families.py): prometheus-client's own metric objects took a
lock and went through a child object on each of the dozen updates a request made. A
finished run looks up the cells of its labels once (surface, model, provider, status,
tenant, project: `_RunCells`; an attempt's by provider and outcome) and adds to them in
place, instead of making and looking up a label tuple per update.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest

from adapters.metric_families import Cell, CounterFamily, Families, GaugeFamily, HistogramFamily
from adapters.observe import (
    AttemptEnded,
    BreakerChanged,
    JobRan,
    Observer,
    Refused,
    Replayed,
    RunFinished,
    RunOpened,
    RunWatch,
    WebhookSent,
)
from core.model import FailureKind

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
        self.families = f = Families()
        self.requests = f.add(CounterFamily(
            "umg_requests", "Finished requests", ["surface", "model", "provider", "status"]
        ))
        self.latency = f.add(HistogramFamily(
            "umg_request_duration_seconds", "Request latency, arrival to ledger row",
            ["surface", "provider"], buckets=LATENCY_BUCKETS,
        ))  # fmt: skip
        self.ttft = f.add(HistogramFamily(
            "umg_time_to_first_token_seconds", "Time to the first content",
            ["surface", "provider"], buckets=LATENCY_BUCKETS,
        ))  # fmt: skip
        self.overhead = f.add(HistogramFamily(
            "umg_gateway_overhead_seconds", "Time spent in the gateway, excluding providers",
            ["surface"], buckets=OVERHEAD_BUCKETS,
        ))  # fmt: skip
        self.tokens = f.add(CounterFamily("umg_tokens", "Tokens metered", ["model", "provider", "kind"]))
        self.cost = f.add(CounterFamily(
            "umg_cost_usd", "Cost in USD (the ledger has the exact figures)",
            ["model", "provider", "tenant", "project"],
        ))  # fmt: skip
        self.attempts = f.add(CounterFamily(
            "umg_upstream_attempts", "Provider attempts by outcome", ["provider", "outcome"]
        ))
        self.failures = f.add(CounterFamily(
            "umg_upstream_failures", "Failed provider attempts by kind", ["provider", "kind"]
        ))
        self.retries = f.add(CounterFamily("umg_retries", "Attempts retried on the same deployment", ["provider"]))
        self.fallbacks = f.add(CounterFamily(
            "umg_fallbacks", "Attempts after which the run fell back to another deployment", ["provider"],
        ))  # fmt: skip
        self.refusals = f.add(CounterFamily(
            "umg_refusals", "Requests refused: rate_limited, budget_exceeded, unauthenticated", ["reason"],
        ))  # fmt: skip
        self.breaker = f.add(GaugeFamily(
            "umg_breaker_state", "Circuit per deployment: 0 closed, 1 half-open, 2 open", ["deployment"],
        ))  # fmt: skip
        self.breaker_changes = f.add(CounterFamily(
            "umg_breaker_transitions", "Circuit transitions", ["deployment", "to"]
        ))
        self.in_flight = f.add(GaugeFamily("umg_in_flight_requests", "Requests being answered"))
        self.in_flight_streams = f.add(GaugeFamily("umg_in_flight_streams", "Streamed requests being answered"))
        self.replays = f.add(CounterFamily(
            "umg_idempotent_replays", "Answers replayed from an Idempotency-Key record", ["surface"]
        ))
        self.jobs = f.add(CounterFamily("umg_job_runs", "Job runs by the job's status after the run", ["status"]))
        self.jobs_by_status = f.add(GaugeFamily("umg_jobs", "Jobs by status (queued: the queue depth)", ["status"]))
        self.webhooks = f.add(CounterFamily("umg_webhook_deliveries", "Webhook delivery attempts", ["outcome"]))
        self.ledger_queue = f.add(GaugeFamily("umg_ledger_queue_depth", "Ledger rows waiting to be committed"))
        self.ledger_commit = f.add(HistogramFamily(
            "umg_ledger_write_seconds", "Time to write a request's ledger row (commit included)",
            buckets=COMMIT_BUCKETS,
        ))  # fmt: skip
        # the unlabelled cells every run updates, and per run's labels those it counts into
        self.in_flight_cell = self.in_flight.cell(())
        self.in_flight_streams_cell = self.in_flight_streams.cell(())
        self.ledger_commit_cell = self.ledger_commit.cell(())
        self.runs: dict[RunKey, _RunCells] = {}
        self.attempt_runs: dict[AttemptKey, tuple[Cell, ...]] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(f)

    # -- the observer ----------------------------------------------------------------------

    def model_label(self, model: str) -> str:
        return model if model in self.models else OTHER

    def run_opened(self, event: RunOpened) -> RunWatch:
        self.in_flight_cell[0] += 1.0
        if event.stream:
            self.in_flight_streams_cell[0] += 1.0
        return _Watch(self, event)

    def refused(self, event: Refused) -> None:
        self.refusals.inc(("unauthenticated",))

    def replayed(self, event: Replayed) -> None:
        self.replays.inc((event.endpoint,))

    def job_ran(self, event: JobRan) -> None:
        self.jobs.inc((event.status,))

    def webhook_sent(self, event: WebhookSent) -> None:
        outcome = "delivered" if event.ok else ("gave_up" if event.gave_up else "failed")
        self.webhooks.inc((outcome,))

    def breaker_changed(self, event: BreakerChanged) -> None:
        self.breaker.set((event.deployment,), BREAKER_STATES.get(event.after, 2))
        self.breaker_changes.inc((event.deployment, event.after))

    # -- scrape ------------------------------------------------------------------------------

    def refresh(self, job_counts: dict[str, int], ledger_queue: int) -> None:
        for status, count in job_counts.items():
            self.jobs_by_status.set((status,), count)
        self.ledger_queue.set((), ledger_queue)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Watch(RunWatch):
    """One run's counts, all taken at its end: `RunFinished` carries its attempts and its
    ttft, so no other hook is overridden (each one a run's observers are told costs a
    step on the request path)."""

    def __init__(self, metrics: Metrics, opened: RunOpened) -> None:
        self.m = metrics
        self.opened = opened

    def run_finished(self, event: RunFinished) -> None:
        m, row, opened = self.m, event.row, self.opened
        for attempt in event.attempts:
            _count_attempt(m, attempt)
        model = m.model_label(opened.model)
        provider = row.provider or "none"
        key = (opened.endpoint, model, provider, row.status, row.tenant, row.project)
        cells = m.runs.get(key)
        if cells is None:
            cells = m.runs[key] = _RunCells(m, key)
        m.in_flight_cell[0] -= 1.0
        if opened.stream:
            m.in_flight_streams_cell[0] -= 1.0
        cells.requests[0] += 1.0
        if row.status in REFUSALS:
            m.refusals.inc((row.status,))
        if row.latency_ms is not None:
            m.latency.observe_into(cells.latency(), row.latency_ms / 1000)
        if event.ttft is not None:
            m.ttft.observe_into(cells.ttft(), event.ttft)
        m.overhead.observe_into(cells.overhead, event.overhead_ms / 1000)
        m.ledger_commit.observe_into(m.ledger_commit_cell, event.ledger_seconds)
        if row.input_tokens:
            cells.tokens("input")[0] += row.input_tokens
        if row.cached_input_tokens:
            cells.tokens("cached_input")[0] += row.cached_input_tokens
        if row.output_tokens:
            cells.tokens("output")[0] += row.output_tokens
        if row.cost:
            cells.cost()[0] += float(row.cost)


RunKey = tuple[str, str, str, str, str, str]  # surface, model label, provider, status, tenant, project


class _RunCells:
    """The cells a finished run of one `RunKey` counts into, kept by `Metrics` per key (the
    keys are bounded as the labels are): the request counter and the overhead histogram,
    which every run updates, made with it (at the key's first run, which updates them);
    the others made at their first update, as `inc` / `observe` would make them (a label
    set shows once it is counted, in the order first counted)."""

    __slots__ = ("m", "key", "requests", "overhead", "_latency", "_ttft", "_tokens", "_cost")

    def __init__(self, m: Metrics, key: RunKey) -> None:
        surface, model, provider, status, _, _ = key
        self.m = m
        self.key = key
        self.requests = m.requests.cell((surface, model, provider, status))
        self.overhead = m.overhead.cell((surface,))
        self._latency: Cell | None = None
        self._ttft: Cell | None = None
        self._tokens: dict[str, Cell] = {}
        self._cost: Cell | None = None

    def latency(self) -> Cell:
        if self._latency is None:
            self._latency = self.m.latency.cell((self.key[0], self.key[2]))
        return self._latency

    def ttft(self) -> Cell:
        if self._ttft is None:
            self._ttft = self.m.ttft.cell((self.key[0], self.key[2]))
        return self._ttft

    def tokens(self, kind: str) -> Cell:
        found = self._tokens.get(kind)
        if found is None:
            found = self._tokens[kind] = self.m.tokens.cell((self.key[1], self.key[2], kind))
        return found

    def cost(self) -> Cell:
        if self._cost is None:
            _, model, provider, _, tenant, project = self.key
            self._cost = self.m.cost.cell((model, provider, tenant, project))
        return self._cost


AttemptKey = tuple[str, bool, FailureKind | None, str]  # provider, ok, failure, next


def _attempt_cells(m: Metrics, key: AttemptKey) -> tuple[Cell, ...]:
    """The cells an ended attempt of `key` counts one into (made at the key's first
    attempt, which counts into every one of them)."""
    provider, ok, failure, after = key
    outcome = "ok" if ok else (failure.value if failure else "cut")
    found = [m.attempts.cell((provider, outcome))]
    if failure is not None:
        found.append(m.failures.cell((provider, failure.value)))
    if after == "retry":
        found.append(m.retries.cell((provider,)))
    elif after == "fallback":
        found.append(m.fallbacks.cell((provider,)))
    return tuple(found)


def _count_attempt(m: Metrics, event: AttemptEnded) -> None:
    key = (event.provider, event.ok, event.failure, event.next)
    cells = m.attempt_runs.get(key)
    if cells is None:
        cells = m.attempt_runs[key] = _attempt_cells(m, key)
    for cell in cells:
        cell[0] += 1.0
