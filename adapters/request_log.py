"""The request log: one JSON line per finished request, job run, webhook delivery and
breaker transition (an observer, adapters/observe.py).

Owns: what each line says. Lines go through the `umg.request`, `umg.job`, `umg.webhook`
and `umg.breaker` loggers, whose records the JSON formatter (adapters/telemetry.py) writes
with every field at the top level (and secrets redacted). A request's line (`"event":
"request"`) has:
  request_id (the gateway's: its ledger row's), client_request_id (its x-request-id),
  any run tags (trace_id, span_id, when tracing is on), key_prefix (the key's public
  prefix, never the key), tenant, project, surface, model, stream, routing, provider,
  deployment, status, error_code, error (the message the client got),
  attempts ([{attempt, deployment, provider, outcome, next}]: outcome is "ok" or the
  failure kind; next is retry / fallback / gave_up / cut / answered), input_tokens,
  cached_input_tokens, output_tokens, cost_usd (a decimal string), latency_ms, ttft_ms,
  overhead_ms, finish_reason.
Levels: `info` for a request that ended well (or whose client left, or was canceled),
`warning` for one refused or failed with a 4xx, `error` for a 5xx; the same for jobs.
An unauthenticated request has a line too (no key, so no tenant, and no ledger row), and
so has an answer replayed for an Idempotency-Key: `"replayed": true`, `status`
"replayed", `http_status` (the replayed answer's), `original_request_id` (the gateway's
id of the request that got it: its ledger row's), no ledger row of its own.
"""

from __future__ import annotations

import logging
from typing import Any

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
from adapters.telemetry import emit
from core.billing import format_usd
from core.errors import GatewayError

REQUESTS = logging.getLogger("umg.request")
JOBS = logging.getLogger("umg.job")
WEBHOOKS = logging.getLogger("umg.webhook")
BREAKERS = logging.getLogger("umg.breaker")


def level_of(error: GatewayError | None) -> int:
    if error is None:
        return logging.INFO
    if error.status >= 500:
        return logging.ERROR
    if error.code == "client_closed_request":
        return logging.INFO
    return logging.WARNING


def _attempt(event: AttemptEnded) -> dict[str, Any]:
    return {
        "attempt": event.attempt,
        "deployment": event.deployment,
        "provider": event.provider,
        "outcome": "ok" if event.ok else (event.failure.value if event.failure else "cut"),
        "next": event.next,
    }


class _RequestWatch(RunWatch):
    """One run's line, written at its end from `RunFinished` (its attempts included): no
    other hook is overridden, and a line below the level costs nothing more."""

    def __init__(self, opened: RunOpened) -> None:
        self.opened = opened

    def run_finished(self, event: RunFinished) -> None:
        opened, row, error = self.opened, event.row, event.error
        level = level_of(error)
        if not REQUESTS.isEnabledFor(level):
            return
        fields: dict[str, Any] = {
            "event": "request",
            "request_id": row.request_id,
            "client_request_id": opened.client_request_id,
            **opened.tags,
            "key_prefix": opened.key_prefix,
            "tenant": row.tenant,
            "project": row.project,
            "surface": row.endpoint,
            "model": row.model,
            "stream": row.stream,
            "routing": event.routing or opened.routing,
            "provider": row.provider,
            "deployment": row.deployment,
            "status": row.status,
            "error_code": row.error_code,
            "error": error.message if error is not None else None,
            "attempts": [_attempt(a) for a in event.attempts],
            "input_tokens": row.input_tokens,
            "cached_input_tokens": row.cached_input_tokens,
            "output_tokens": row.output_tokens,
            "cost_usd": format_usd(row.cost),
            "latency_ms": row.latency_ms,
            "ttft_ms": row.ttft_ms,
            "overhead_ms": round(event.overhead_ms, 2),
            "finish_reason": event.finish_reason,
        }
        emit(REQUESTS, level, f"request {row.status} {row.endpoint}", fields)


class RequestLog(Observer):
    """The observer that writes the request log (see the module docstring)."""

    def run_opened(self, event: RunOpened) -> RunWatch:
        return _RequestWatch(event)

    def refused(self, event: Refused) -> None:
        REQUESTS.warning(
            "request refused %s", event.endpoint,
            extra={
                "event": "request",
                "request_id": event.request_id,
                "client_request_id": event.client_request_id,
                "surface": event.endpoint,
                "status": "unauthenticated",
                "error_code": event.error.code,
                "error": event.error.message,
            },
        )

    def replayed(self, event: Replayed) -> None:
        emit(REQUESTS, logging.INFO, f"request replayed {event.endpoint}", {
            "event": "request",
            "request_id": event.request_id,
            "client_request_id": event.client_request_id,
            "replayed": True,
            "original_request_id": event.original_request_id,
            "key_prefix": event.key_prefix,
            "tenant": event.tenant,
            "project": event.project,
            "surface": event.endpoint,
            "status": "replayed",
            "http_status": event.status,
        })  # fmt: skip

    def job_ran(self, event: JobRan) -> None:
        level = logging.INFO if event.status in ("succeeded", "canceled", "queued") else logging.WARNING
        JOBS.log(
            level, "job %s %s", event.job_id, event.status,
            extra={
                "event": "job",
                "job_id": event.job_id,
                "tenant": event.tenant,
                "request_id": event.request_id,
                "status": event.status,
                "attempt": event.attempt,
                "error_code": event.error_code,
                "duration_ms": round(event.seconds * 1000, 2),
            },
        )

    def webhook_sent(self, event: WebhookSent) -> None:
        level = logging.INFO if event.ok else logging.WARNING
        said = "delivered" if event.ok else f"failed: {event.error}" + (f": {event.detail}" if event.detail else "")
        WEBHOOKS.log(
            level, "webhook %s %s%s", event.message_id, said, " (given up)" if event.gave_up else "",
            extra={
                "event": "webhook",
                "message_id": event.message_id,
                "job_id": event.job_id,
                "attempt": event.attempt,
                "status_code": event.status_code,
                "ok": event.ok,
                "error": event.error,
                "detail": event.detail,
                "gave_up": event.gave_up,
            },
        )

    def breaker_changed(self, event: BreakerChanged) -> None:
        level = logging.WARNING if event.after == "open" else logging.INFO
        BREAKERS.log(
            level, "deployment %s: circuit %s -> %s", event.deployment, event.before, event.after,
            extra={
                "event": "breaker",
                "deployment": event.deployment,
                "before": event.before,
                "after": event.after,
            },
        )
