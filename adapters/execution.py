"""The record of one request as it runs: what was planned, tried, streamed and spent.

Owns: the mutable per-request facts that end up in the response's `gateway` object and
in exactly one usage-ledger row. Written only by the request driver (adapters/driver.py);
read by the surfaces (server/) when they encode the answer.
The `gateway` object gains `max_output_tokens: {requested, sent}` when the request asked
for more output than the answering deployment allows (every codec sends at most the
deployment's limit), and `overhead_ms` (the gateway's own time, adapters/stopwatch.py)
once the row is written.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from attrs import define, field

from adapters.storage.records import KeyRecord, UsageRecord
from core.attempts import Attempts
from core.billing import format_usd
from core.catalog import Deployment
from core.model import NO_USAGE, FinishReason, GatewayRequest, Usage
from core.outcome import Outcome
from core.routing import RoutePlan


@define
class Execution:
    request_id: str
    key: KeyRecord
    request: GatewayRequest
    endpoint: str
    started: float  # clock.now() when the request arrived
    input_estimate: int = 0
    plan: RoutePlan | None = None
    attempts: Attempts | None = None
    deployment: Deployment | None = None  # the deployment that answered (or last tried)
    usage: Usage = NO_USAGE  # summed over every attempt that consumed tokens
    cost: Decimal = Decimal(0)  # summed over every attempt
    answer_usage: Usage = NO_USAGE  # of the attempt that answered
    finish_reason: FinishReason = "stop"
    price_version: str | None = None
    ttft: float | None = None  # seconds from start to the first chunk sent (streams)
    upstream_model: str | None = None  # as the provider named it (whole answers)
    upstream_id: str | None = None
    rate_headers: dict[str, str] = field(factory=dict)
    outcome: Outcome | None = None  # set once, when the ledger row is written
    overhead_ms: float | None = None  # the gateway's own time (adapters/stopwatch.py), with `outcome`

    def attempt_log(self) -> list[dict[str, object]]:
        """Each provider attempt so far: which deployment, and how it ended."""
        records = self.attempts.records if self.attempts is not None else ()
        return [
            {
                "deployment": r.deployment_id,
                "provider": r.provider,
                "attempt": r.attempt,
                "outcome": r.outcome,
            }
            for r in records
        ]

    def gateway_info(self) -> dict[str, object]:
        """The `gateway` object every answer carries."""
        return {
            "request_id": self.request_id,
            "provider": self.deployment.provider if self.deployment else None,
            "deployment": self.deployment.id if self.deployment else None,
            "model": self.deployment.model if self.deployment else self.request.model,
            "routing": self.plan.strategy if self.plan else self.request.routing.strategy,
            "attempts": self.attempt_log(),
            "cost_usd": format_usd(self.cost),
            **self._clamp_note(),
            **({"overhead_ms": round(self.overhead_ms, 2)} if self.overhead_ms is not None else {}),
        }

    def _clamp_note(self) -> dict[str, object]:
        """Says when the asked output limit was above the answering deployment's limit."""
        asked, d = self.request.max_output_tokens, self.deployment
        if asked is None or d is None or asked <= d.max_output_tokens:
            return {}
        return {"max_output_tokens": {"requested": asked, "sent": d.max_output_tokens}}


def ledger_row(
    exe: Execution, row_id: str, at: datetime, now: float, client_request_id: str | None = None
) -> UsageRecord:
    """The request's one ledger row, once its outcome is set (`now`: clock.now());
    `client_request_id`: the client's own x-request-id, if it sent one."""
    assert exe.outcome is not None, "the outcome is set before the row is written"
    dep, usage = exe.deployment, exe.usage
    return UsageRecord(
        id=row_id,
        request_id=exe.request_id,
        at=at,
        tenant=exe.key.tenant,
        project=exe.key.project,
        key_id=exe.key.id,
        endpoint=exe.endpoint,
        model=exe.request.model,
        provider=dep.provider if dep else None,
        deployment=dep.id if dep else None,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cost=exe.cost,
        price_version=exe.price_version,
        status=exe.outcome.status,
        error_code=exe.outcome.error_code,
        latency_ms=int((now - exe.started) * 1000),
        ttft_ms=int(exe.ttft * 1000) if exe.ttft is not None else None,
        attempts=len(exe.attempts.records) if exe.attempts else 0,
        stream=exe.request.stream,
        attempt_log=tuple(exe.attempt_log()),
        client_request_id=client_request_id,
    )
