"""The request lifecycle: authenticate, admit, route, run, settle, record.

Owns: the order of the steps every model request goes through, whichever API surface or
job worker it came from:
  1. `authenticate` the bearer key (prefix lookup, constant-time hash check, revocation);
  2. `admit`: estimate input tokens, take the key's request and token rate limits, and
     plan the route (`core.routing.plan` with this process's health book);
  3. `complete` or `stream`: the runner drives the attempt machine; each attempt gets a
     budget grant (output capped to what the request's `max_cost_usd` and the key's
     budget can pay) that is settled with the real cost, or released;
  4. `record`: exactly one usage-ledger row per request, whatever happened (success,
     provider failure, client gone, rejected by limits), written shielded from
     cancellation so a disconnect or shutdown cannot drop it.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing

import trio

from adapters import keys
from adapters.clock import Clock
from adapters.execution import Execution
from adapters.health_book import HealthBook
from adapters.limits import Grant, Limits
from adapters.providers.base import Provider, Timeouts
from adapters.runner import Runner
from adapters.storage.base import Storage
from adapters.storage.records import KeyRecord, UsageRecord
from core import attempts, routing
from core.billing import cost
from core.catalog import Catalog, Deployment
from core.errors import AuthenticationFailed, ClientClosed, GatewayError
from core.model import Completion, GatewayRequest, StreamEnd, StreamEvent, Usage
from core.tokens import estimate_request_tokens

_STATUS_BY_CODE = {
    "rate_limit_exceeded": "rate_limited",
    "budget_exceeded": "budget_exceeded",
    "client_closed_request": "client_closed",
}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class Gateway:
    def __init__(
        self,
        *,
        storage: Storage,
        catalog: Catalog,
        providers: Mapping[str, Provider],
        clock: Clock,
        health: HealthBook | None = None,
        attempt_policy: attempts.AttemptPolicy | None = None,
        timeouts: Timeouts | None = None,
        default_rpm: int | None = None,
        default_tpm: int | None = None,
    ) -> None:
        self.storage = storage
        self.catalog = catalog
        self.providers = providers
        self.clock = clock
        self.health = health or HealthBook()
        # the defaults apply to keys without an rpm / tpm of their own ([limits] in config)
        self.limits = Limits(storage, clock, default_rpm=default_rpm, default_tpm=default_tpm)
        self.runner = Runner(
            providers,
            self.health,
            clock,
            attempt_policy or attempts.AttemptPolicy(),
            timeouts or Timeouts(),
            self._grant,
            self._settle,
        )

    # -- 1. who is calling -------------------------------------------------------------

    async def authenticate(self, token: str | None) -> KeyRecord:
        prefix = keys.prefix_of(token) if token else None
        if token is None or prefix is None:
            raise AuthenticationFailed(
                "Missing or malformed API key: send 'Authorization: Bearer umg_live_...'"
            )
        record = await self.storage.key_by_prefix(prefix)
        if record is None or not keys.matches(token, record.secret_hash):
            raise AuthenticationFailed("Invalid API key")
        if record.revoked_at is not None:
            raise AuthenticationFailed("This API key has been revoked")
        return record

    # -- 2. admission ------------------------------------------------------------------

    def start(self, key: KeyRecord, request: GatewayRequest, endpoint: str) -> Execution:
        return Execution(
            request_id=new_id("req"),
            key=key,
            request=request,
            endpoint=endpoint,
            started=self.clock.now(),
        )

    async def admit(self, exe: Execution) -> None:
        """Rate limits and routing; raises (and the caller must still `record`)."""
        exe.input_estimate = estimate_request_tokens(exe.request)
        tokens = exe.input_estimate + (exe.request.max_output_tokens or 0)
        exe.rate_headers = await self.limits.take_rate(exe.key, tokens)
        exe.plan = routing.plan(
            exe.request,
            self.catalog,
            self.health.snapshot(),
            now=self.clock.now(),
            draw=secrets.randbelow(1 << 30) / (1 << 30),
            input_tokens=exe.input_estimate,
            policy=self.health.policy,
        )

    # -- 3. running --------------------------------------------------------------------

    async def _grant(self, exe: Execution, d: Deployment, attempt: int) -> Grant:
        asked = exe.request.max_output_tokens
        wanted = min(asked, d.max_output_tokens) if asked is not None else d.max_output_tokens
        remaining = None if exe.request.max_cost_usd is None else exe.request.max_cost_usd - exe.cost
        return await self.limits.grant(
            exe.key,
            f"{exe.request_id}:{attempt}",
            d.price,
            exe.input_estimate,
            wanted,
            remaining,
            capped=asked is not None,
        )

    async def _settle(self, exe: Execution, grant: Grant, attempt: int, usage: Usage | None) -> None:
        rid = f"{exe.request_id}:{attempt}"
        if usage is None or exe.deployment is None:
            await self.limits.release(grant, rid)
            return
        spent = cost(usage, exe.deployment.price)
        exe.usage = exe.usage + usage
        exe.answer_usage = usage
        exe.cost += spent
        exe.price_version = exe.deployment.price.version
        await self.limits.settle(grant, rid, spent)

    async def complete(self, exe: Execution) -> Completion:
        try:
            completion = await self.runner.complete(exe)
        except GatewayError as err:
            exe.error = err
            raise
        exe.status = "ok"
        exe.finish_reason = completion.finish_reason
        return completion

    async def stream(self, exe: Execution) -> AsyncIterator[StreamEvent]:
        try:
            async with aclosing(self.runner.stream(exe)) as events:
                async for event in events:
                    if isinstance(event, StreamEnd):
                        exe.finish_reason = event.finish_reason
                    yield event
            exe.status = "ok"
        except GatewayError as err:
            exe.error = err
            raise
        except (GeneratorExit, trio.Cancelled):
            exe.error = ClientClosed("The client closed the connection before the answer ended")
            raise

    # -- 4. the ledger -----------------------------------------------------------------

    async def record(self, exe: Execution, error: GatewayError | None = None) -> None:
        """Write this request's one ledger row (idempotent; shielded from cancellation)."""
        if exe.recorded:
            return
        exe.recorded = True
        if error is not None and exe.error is None:
            exe.error = error
        if exe.error is not None:
            exe.status = _STATUS_BY_CODE.get(exe.error.code or "", "error")
        d = exe.deployment
        now = self.clock.now()
        row = UsageRecord(
            id=new_id("use"),
            request_id=exe.request_id,
            at=self.clock.wall(),
            tenant=exe.key.tenant,
            project=exe.key.project,
            key_id=exe.key.id,
            endpoint=exe.endpoint,
            model=exe.request.model,
            provider=d.provider if d else None,
            deployment=d.id if d else None,
            input_tokens=exe.usage.input_tokens,
            output_tokens=exe.usage.output_tokens,
            cached_input_tokens=exe.usage.cached_input_tokens,
            cache_write_tokens=exe.usage.cache_write_tokens,
            reasoning_tokens=exe.usage.reasoning_tokens,
            cost=exe.cost,
            price_version=exe.price_version,
            status=exe.status,
            error_code=exe.error.code if exe.error else None,
            latency_ms=int((now - exe.started) * 1000),
            ttft_ms=int(exe.ttft * 1000) if exe.ttft is not None else None,
            attempts=len(exe.attempts.records) if exe.attempts else 0,
            stream=exe.request.stream,
        )
        with trio.CancelScope(shield=True):
            await self.storage.insert_usage(row)
            charged = exe.input_estimate + (exe.request.max_output_tokens or 0)
            if exe.plan is not None:
                await self.limits.adjust_tokens(exe.key, exe.usage.total_tokens - charged)

    async def record_rejected(self, key: KeyRecord, endpoint: str, error: GatewayError) -> None:
        """A request refused before it could be parsed still gets its one ledger row."""
        exe = self.start(key, GatewayRequest(model="", messages=()), endpoint)
        await self.record(exe, error)
