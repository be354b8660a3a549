"""The driver's state as observer records (adapters/observe.py): built only when an
observer is attached.

Owns: what each record says, taken from the run's `Ingress`, its `Execution`, the attempt
machine's actions and the provider; and how an attempt's end is named (`next`): the
machine's next action after a failure says whether the run retried the same deployment,
fell back to another one, or gave up.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from adapters.execution import Execution
from adapters.observe import (
    AttemptEnded,
    AttemptStarted,
    FirstChunk,
    Metered,
    Next,
    Refused,
    RunFinished,
    RunOpened,
)
from adapters.storage.records import UsageRecord
from core import attempts
from core.errors import GatewayError
from core.model import Usage

if TYPE_CHECKING:
    from adapters.driver import Ingress


def opened(ingress: Ingress, exe: Execution) -> RunOpened:
    key, request = exe.key, exe.request
    return RunOpened(
        request_id=exe.request_id,
        client_request_id=ingress.client_request_id or exe.request_id,
        endpoint=exe.endpoint,
        key_prefix=key.prefix,
        key_id=key.id,
        tenant=key.tenant,
        project=key.project,
        model=request.model,
        stream=request.stream,
        routing=request.routing.strategy,
        trace_headers=ingress.trace_headers,
        at=exe.started,
        request=request,
    )


def refused(ingress: Ingress, error: GatewayError, now: float) -> Refused:
    return Refused(
        request_id=ingress.request_id,
        client_request_id=ingress.client_request_id or ingress.request_id,
        endpoint=ingress.endpoint,
        error=error,
        at=now,
    )


def attempt_started(action: attempts.CallProvider, provider: object, now: float) -> AttemptStarted:
    dep = action.deployment
    # HTTP providers say where they call (`server_address`, `server_port`); the Mock does not
    address: str | None = getattr(provider, "server_address", None)
    port: int | None = getattr(provider, "server_port", None)
    return AttemptStarted(
        attempt=action.attempt,
        deployment=dep.id,
        provider=dep.provider,
        upstream_model=dep.upstream_model,
        server_address=address,
        server_port=port,
        at=now,
    )


def first_chunk(action: attempts.CallProvider, exe: Execution, now: float) -> FirstChunk:
    ttft = exe.ttft if exe.ttft is not None else now - exe.started
    return FirstChunk(attempt=action.attempt, ttft=ttft, at=now)


def metered(attempt: int, usage: Usage, cost: Decimal) -> Metered:
    return Metered(attempt=attempt, usage=usage, cost=cost)


def next_of(action: attempts.CallProvider, actions: Sequence[attempts.Action]) -> Next:
    """What the run did after the attempt `action` failed, from the machine's next actions."""
    for nxt in actions:
        if isinstance(nxt, attempts.Finish):
            return "answered"
        if isinstance(nxt, attempts.Fail):
            return "gave_up"
        if isinstance(nxt, attempts.SleepUntil):
            return "retry"
        if isinstance(nxt, attempts.CallProvider):
            return "retry" if nxt.deployment.id == action.deployment.id else "fallback"
    return "gave_up"


def attempt_ended(
    action: attempts.CallProvider,
    event: attempts.Event,
    actions: Sequence[attempts.Action],
    exe: Execution,
    now: float,
) -> AttemptEnded:
    dep = action.deployment
    failed = event if isinstance(event, attempts.AttemptFailed) else None
    return AttemptEnded(
        attempt=action.attempt,
        deployment=dep.id,
        provider=dep.provider,
        ok=failed is None,
        failure=failed.kind if failed else None,
        message=(failed.detail or None) if failed else None,
        next=next_of(action, actions) if failed else "answered",
        at=now,
        response_model=None if failed else exe.upstream_model,
        finish_reason=None if failed else exe.finish_reason,
    )


def attempt_cut(action: attempts.CallProvider, now: float) -> AttemptEnded:
    dep = action.deployment
    return AttemptEnded(
        attempt=action.attempt, deployment=dep.id, provider=dep.provider, ok=False,
        failure=None, message=None, next="cut", at=now,
    )


def finished(
    exe: Execution, row: UsageRecord, error: GatewayError | None, overhead_ms: float,
    ledger_seconds: float, now: float, ended: tuple[AttemptEnded, ...], ttft: float | None,
) -> RunFinished:
    return RunFinished(
        row=row,
        routing=exe.plan.strategy if exe.plan is not None else None,
        finish_reason=None if error is not None or exe.outcome is None or exe.outcome.status != "ok"
        else exe.finish_reason,
        error=error,
        upstream_model=exe.upstream_model,
        overhead_ms=overhead_ms,
        ledger_seconds=ledger_seconds,
        at=now,
        attempts=ended,
        ttft=ttft,
    )
