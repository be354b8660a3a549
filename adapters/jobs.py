"""Durable async jobs: creating them, workers that run them, and webhooks when they end.

Owns: the job runner. A job is a stored request: the body as the client sent it (echoed
in the job object) and the admitted request in its core encoding (`core.request_codec`),
which is what a worker runs, so the job service needs no wire parser. Workers (tasks in the server's
nursery) claim one at a time (`Storage.claim_job`: `FOR UPDATE SKIP LOCKED` on Postgres,
so many gateway processes share one queue without double claims), run it through the same
`Gateway` pipeline as a synchronous request (limits, budgets, routing, fallback, ledger),
heartbeat the lease while it runs, and store the outcome. The lifecycle rules (leases,
retries with backoff, cancel, deadlines) are `core.jobs`'; this module applies them.

- A job left `running` by a stopped process keeps its lease until it expires; then any
  worker reclaims it (attempts + 1), so jobs survive restarts. Claims and heartbeats are
  `core.jobs` transitions applied by storage: a job whose attempts are spent (its workers
  keep dying) or whose deadline passed ends `failed` instead, and is announced.
- A worker survives whatever one run raises (`Cancelled` aside): it logs the error with
  the job id, reports the run as a retryable failure (or, if storage is down, leaves the
  job to its lease expiry) and claims the next job.
- Cancel marks the job canceled at once; a worker running it sees that at its next
  heartbeat and cancels the model call (the ledger records what was consumed).
- When a job ends and has a `webhook_url`, the job object is POSTed, signed per Standard
  Webhooks (`core.webhooks`), with retries on the schedule `core.webhooks` gives. Retries
  live in memory in the workers' nursery: shutdown cancels them (lost, never waited on);
  with no nursery running an announcement is tried once.
- Before each attempt the webhook's host is resolved and every address checked
  (`core.webhook_targets`: no loopback, private, link-local/metadata... addresses unless
  the operator allowlisted the host); the request then goes to the checked address (Host
  header and TLS SNI carry the name), so a DNS answer that changes between check and
  connect cannot redirect it. A refused target is logged and never retried; redirects are
  not followed.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx
import trio
from attrs import evolve

from adapters.clock import Clock
from adapters.driver import Ingress, new_id
from adapters.gateway import Gateway
from adapters.storage.base import Storage, holds_lease, job_state, with_state
from adapters.storage.records import JobRecord, KeyRecord
from core import jobs as lifecycle
from core import request_codec, webhook_targets, webhooks
from core.errors import Conflict, GatewayError, InvalidRequest, NotFound
from core.model import Completion, GatewayRequest

log = logging.getLogger("umg.jobs")

Renderer = Callable[[JobRecord], dict[str, Any]]
_RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
Resolver = Callable[[str, int], Awaitable[list[webhook_targets.Address]]]


async def resolve(host: str, port: int) -> list[webhook_targets.Address]:
    """Every address `host` resolves to (the system resolver, via Trio)."""
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


Pinned = tuple[httpx.URL, dict[str, str], dict[str, str]]


def pinned(
    url: str, target: webhook_targets.Target, address: webhook_targets.Address | None
) -> Pinned:
    """The request URL, extra headers and extensions that send `url` to `address` (the
    checked one) while naming the original host in `Host` and the TLS SNI/certificate
    check; with no address (an allowlisted host), `url` as it is."""
    original = httpx.URL(url)
    if address is None:
        return original, {}, {}
    headers = {"host": original.netloc.decode("ascii")}
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return original.copy_with(host=str(address)), headers, extensions


def completion_result(completion: Completion, gateway_info: dict[str, Any]) -> dict[str, Any]:
    """What a finished job stores: enough to render any API shape later."""
    u = completion.usage
    return {
        "text": completion.text,
        "finish_reason": completion.finish_reason,
        "tool_calls": [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in completion.tool_calls
        ],
        "usage": {
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "cached_input_tokens": u.cached_input_tokens,
            "cache_write_tokens": u.cache_write_tokens,
            "reasoning_tokens": u.reasoning_tokens,
        },
        "upstream_model": completion.upstream_model,
        "gateway": gateway_info,
    }


_STORED = "umg_job_request"


def stored_form(body: dict[str, Any], request: GatewayRequest) -> dict[str, Any]:
    """What a job row keeps as its request: the client's body and the core encoding."""
    return {_STORED: request_codec.VERSION, "body": body, "core": request_codec.encode(request)}


def stored_body(job: JobRecord) -> dict[str, Any]:
    """The request as the client sent it (a row of an older version kept only that)."""
    stored = job.request
    return stored["body"] if _STORED in stored else stored  # type: ignore[no-any-return]


def stored_request(job: JobRecord) -> GatewayRequest:
    """The admitted request; `ValueError` when the row does not hold a readable one."""
    if _STORED not in job.request:
        raise ValueError("the job was stored by an older version of the gateway")
    return request_codec.decode(job.request["core"])


class JobService:
    def __init__(
        self,
        storage: Storage,
        gateway: Gateway,
        clock: Clock,
        *,
        policy: lifecycle.JobPolicy | None = None,
        poll_seconds: float = 0.5,
        http: httpx.AsyncClient | None = None,
        targets: webhook_targets.TargetPolicy | None = None,
        resolver: Resolver = resolve,
    ) -> None:
        self.storage = storage
        self.gateway = gateway
        self.clock = clock
        self.policy = policy or lifecycle.JobPolicy()
        self.poll_seconds = poll_seconds
        self.http = http
        self.targets = targets or webhook_targets.TargetPolicy()
        self.resolver = resolver
        self.render: Renderer = lambda job: {"id": job.id, "status": job.status}
        self._changed: dict[str, trio.Event] = {}
        self._wakeup = trio.Event()
        self._deliveries: trio.Nursery | None = None

    # -- API side ----------------------------------------------------------------------

    async def create(
        self, key: KeyRecord, request: GatewayRequest, body: dict[str, Any],
        webhook_url: str | None,
    ) -> JobRecord:
        """Store `request` (already parsed: a bad one was refused by the caller) with the
        JSON `body` it came as."""
        self.gateway.catalog.resolve(request.model)  # an unknown model: 404 model_not_found
        now = self.clock.epoch()
        job = JobRecord(
            id=new_id("job"),
            tenant=key.tenant,
            project=key.project,
            key_id=key.id,
            request=stored_form(body, request),
            status="queued",
            attempts=0,
            run_after=now,
            lease_owner=None,
            lease_expires=None,
            deadline=None,
            cancel_requested=False,
            result=None,
            error=None,
            cost=None,
            webhook_url=webhook_url,
            created_at=self.clock.wall(),
            started_at=None,
            completed_at=None,
        )
        await self.storage.insert_job(job)
        self._wakeup.set()
        return job

    async def get(self, tenant: str, job_id: str) -> JobRecord:
        job = await self.storage.get_job(tenant, job_id)
        if job is None:
            raise NotFound(f"No job '{job_id}'", param="id")
        return job

    async def cancel(self, tenant: str, job_id: str) -> JobRecord:
        """Cancel a queued or running job; canceling a canceled job again is a no-op that
        answers the job, but a job that already succeeded or failed raises `Conflict`."""
        now = self.clock.epoch()
        asked: list[lifecycle.JobAction] = []

        def apply(job: JobRecord) -> JobRecord:
            state, actions = lifecycle.step(job_state(job), lifecycle.Cancel(), now, self.policy)
            asked[:] = actions
            done = job.completed_at or (self.clock.wall() if state.status == "canceled" else None)
            return evolve(with_state(job, state), completed_at=done)

        await self.get(tenant, job_id)  # another tenant's job is a 404, not a cancel
        job = await self.storage.update_job(job_id, apply)
        assert job is not None
        if job.status in ("succeeded", "failed"):
            raise Conflict(f"Job '{job_id}' already {job.status}; it can no longer be canceled",
                           param="id")
        self._notify(job)
        await self._perform(job, asked)
        return job

    async def _perform(self, job: JobRecord, actions: list[lifecycle.JobAction]) -> None:
        """What the machine asked for once the row is stored (a run is started by the
        worker loop, from the claimed row)."""
        for action in actions:
            if isinstance(action, lifecycle.Announce):
                await self._announce(job)

    async def wait(self, tenant: str, job_id: str, seconds: float) -> JobRecord:
        """The job once terminal, or as it is after `seconds`."""
        job = await self.get(tenant, job_id)
        with trio.move_on_after(seconds):
            while not lifecycle.is_terminal(job.status):
                event = self._changed.setdefault(job_id, trio.Event())
                with trio.move_on_after(self.poll_seconds):
                    await event.wait()
                job = await self.get(tenant, job_id)
        return job

    def _notify(self, job: JobRecord) -> None:
        event = self._changed.pop(job.id, None)
        if event is not None:
            event.set()

    # -- workers -----------------------------------------------------------------------

    async def run_workers(self, count: int) -> None:
        """Run `count` workers, and the webhook deliveries (also with no worker), until
        cancelled. Cancelling (server shutdown) also cancels pending delivery retries:
        they are kept in memory only, so a retry still sleeping is lost, never waited on."""
        try:
            async with trio.open_nursery() as nursery:
                self._deliveries = nursery
                nursery.start_soon(trio.sleep_forever)  # deliveries outlive idle workers
                for n in range(count):
                    nursery.start_soon(self._worker, f"w{n}-{secrets.token_hex(4)}")
        finally:
            self._deliveries = None

    async def _worker(self, name: str) -> None:
        """Claim and run jobs until cancelled. A run that breaks unexpectedly (a storage
        error, a bug) is logged and reported as a retryable failure, and the worker goes
        on: one bad job or a storage blip never stops the job workers."""
        while True:
            try:
                job = await self.storage.claim_job(name, self.clock.epoch(), self.policy)
            except Exception:
                log.exception("job worker %s could not claim a job; trying again", name)
                await trio.sleep(self.poll_seconds)
                continue
            if job is None:
                with trio.move_on_after(self.poll_seconds):
                    await self._wakeup.wait()
                self._wakeup = trio.Event() if self._wakeup.is_set() else self._wakeup
                continue
            try:
                if job.status == "running":
                    await self._run(name, job)
                else:  # claiming ended it (attempts spent, deadline passed)
                    log.warning("job %s failed on claim: %s", job.id,
                                (job.error or {}).get("code"))
                    await self._ended(job)
            except Exception as err:
                log.exception("job %s: unexpected error in worker %s", job.id, name)
                await self._run_broke(name, job.id, err)

    async def _run_broke(self, worker: str, job_id: str, err: Exception) -> None:
        """After an unexpected error: report a retryable failure for the run (so the job is
        retried with backoff while attempts are left, then fails), if storage allows;
        else leave the job to the lease expiry (another claim applies the same rules)."""
        while isinstance(err, ExceptionGroup) and len(err.exceptions) == 1:
            err = err.exceptions[0]  # the run's nursery wraps what it raised
        error = GatewayError(f"The job's run failed with an internal error ({type(err).__name__})")
        outcome: dict[str, Any] = {"error": error, "retryable": True}
        try:
            await self._finish(worker, job_id, outcome)
        except Exception:
            log.exception("job %s: could not record the failed run; its lease will expire",
                          job_id)
            await trio.sleep(self.poll_seconds)  # do not spin on a broken storage

    async def _ended(self, job: JobRecord) -> None:
        self._notify(job)
        if lifecycle.is_terminal(job.status):
            await self._announce(job)

    async def _run(self, worker: str, job: JobRecord) -> None:
        self._notify(job)
        outcome: dict[str, Any] = {}
        stopped: list[JobRecord] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._heartbeat, worker, job.id, nursery.cancel_scope, stopped)
            await self._execute(job, outcome)
            nursery.cancel_scope.cancel()
        if stopped and stopped[0].status == "failed":
            await self._ended(stopped[0])  # the heartbeat found the deadline passed
        elif outcome:
            await self._finish(worker, job.id, outcome)

    async def _heartbeat(
        self, worker: str, job_id: str, work: trio.CancelScope, stopped: list[JobRecord]
    ) -> None:
        """Every lease/3, `Heartbeat` the job; when the worker no longer holds the lease
        (canceled, reclaimed, deadline passed, gone) stop the work. A heartbeat that fails
        on a storage error is logged and tried again at the next tick: the lease outlives
        two missed beats, and a reclaimed job drops this worker's late report anyway."""
        while True:
            await trio.sleep(self.policy.lease_seconds / 3)
            try:
                job = await self.storage.heartbeat(job_id, worker, self.clock.epoch(),
                                                   self.policy)
            except Exception:
                log.exception("job %s: heartbeat by %s failed; trying again", job_id, worker)
                continue
            if not holds_lease(job, worker):
                log.info("job %s was canceled, timed out or lost its lease; stopping it",
                         job_id)
                if job is not None:
                    stopped.append(job)
                work.cancel()
                return

    async def _execute(self, job: JobRecord, outcome: dict[str, Any]) -> None:
        key = await self.storage.key_by_id(job.key_id)
        if key is None or key.revoked_at is not None:
            err = NotFound("The key that created this job no longer exists or was revoked")
            outcome.update(error=err, retryable=False)
            return
        async def parse() -> GatewayRequest:
            try:
                return stored_request(job)
            except ValueError as err:
                raise InvalidRequest(f"The job's stored request cannot be run: {err}") from None

        # A job's run is not cut by the HTTP drain: its lease outlives a restart. Canceled,
        # lease lost or shut down, the ledger says "canceled".
        run = self.gateway.driver.run(
            Ingress(new_id("req"), "jobs", parse, key=key, outside_cancel="canceled", tracked=False)
        )
        try:
            await run.open()
            completion = await run.collect()
        except GatewayError as err:
            outcome.update(error=err, retryable=err.status in _RETRYABLE_STATUSES, exe=run.execution)
        else:
            outcome.update(result=completion_result(completion, run.exe.gateway_info()), exe=run.exe)

    async def _finish(self, worker: str, job_id: str, outcome: dict[str, Any]) -> None:
        now = self.clock.epoch()
        err: GatewayError | None = outcome.get("error")
        exe = outcome.get("exe")
        if err is None:
            event: lifecycle.JobEvent = lifecycle.Succeed(worker)
        else:
            event = lifecycle.Fail(worker, outcome["retryable"], err.message)

        asked: list[lifecycle.JobAction] = []

        def apply(job: JobRecord) -> JobRecord:
            asked.clear()
            try:
                state, actions = lifecycle.step(job_state(job), event, now, self.policy)
            except lifecycle.LeaseLost:
                return job  # reclaimed by another worker: this late report is dropped
            asked.extend(actions)
            if state == job_state(job):
                return job  # canceled meanwhile, or the lease moved on
            updated = with_state(job, state)
            cost = (job.cost or Decimal(0)) + (exe.cost if exe is not None else Decimal(0))
            updated = evolve(updated, cost=cost)
            if state.status == "succeeded":
                return evolve(updated, result=outcome["result"], error=None, completed_at=self.clock.wall())
            body = err.to_body()["error"] if err is not None else None
            if state.status == "failed":
                return evolve(updated, error=body, completed_at=self.clock.wall())
            return evolve(updated, error=body)

        job = await self.storage.update_job(job_id, apply)
        if job is not None:
            self._notify(job)
            await self._perform(job, asked)  # an end is announced once, not again

    # -- webhooks ----------------------------------------------------------------------

    async def webhook_secret(self, tenant: str) -> str:
        """The tenant's signing secret (`whsec_...`), created on first use."""
        def apply(state: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
            if state and "secret" in state:
                return str(state["secret"]), state
            fresh = webhooks.new_secret(secrets.token_bytes(24))
            return fresh, {"secret": fresh}

        return await self.storage.update_state(f"webhooks:secret:{tenant}", apply)

    async def _announce(self, job: JobRecord) -> None:
        if job.webhook_url is None or self.http is None:
            return
        body = json.dumps(self.render(job), separators=(",", ":")).encode()
        secret = await self.webhook_secret(job.tenant)
        msg_id = f"msg_{job.id}_{job.status}"
        if self._deliveries is not None:
            self._deliveries.start_soon(self._deliver, job.webhook_url, msg_id, body, secret)
        else:  # no background nursery (not started, or shut down): one try, no retries
            await self._deliver(job.webhook_url, msg_id, body, secret, retry=False)

    async def _deliver(
        self, url: str, msg_id: str, body: bytes, secret: str, *, retry: bool = True
    ) -> None:
        """POST the message, retrying on the `core.webhooks` schedule (in memory: lost on
        shutdown, whose cancellation ends any pending sleep at once). Never raises but
        `Cancelled`: it runs in the workers' nursery, which one bad URL must not stop."""
        attempt = 0
        while True:
            headers = webhooks.headers(secret, msg_id, int(self.clock.epoch()), body)
            headers["content-type"] = "application/json"
            try:
                checked = await self._checked(url)
                if isinstance(checked, str):
                    log.warning("webhook %s refused, not sent: %s", msg_id, checked)
                    return
                target_url, extra, extensions = checked
                response = await self.http.post(  # type: ignore[union-attr]
                    target_url, content=body, headers={**headers, **extra},
                    extensions=extensions, timeout=15.0, follow_redirects=False,
                )  # fmt: skip
                if 200 <= response.status_code < 300 or response.status_code == 410:
                    return
                log.info("webhook %s answered %s", msg_id, response.status_code)
            except (httpx.HTTPError, OSError) as err:  # OSError: resolution failed
                log.info("webhook %s failed: %s", msg_id, type(err).__name__)
            except Exception:
                log.exception("webhook %s could not be sent; giving up", msg_id)
                return
            attempt += 1
            delay = webhooks.retry_schedule(attempt) if retry else None
            if delay is None:
                log.warning("webhook %s given up after %d attempts", msg_id, attempt)
                return
            await trio.sleep(delay)

    async def _checked(self, url: str) -> Pinned | str:
        """Where to send `url` (pinned to a checked address), or why it is refused."""
        target = webhook_targets.parse(url)
        if isinstance(target, str):
            return f"the URL {target}"
        if webhook_targets.is_allowlisted(target, self.targets):
            reason = webhook_targets.refusal(target, [], self.targets)
            return f"host {target.host} {reason}" if reason else pinned(url, target, None)
        addresses = await self.resolver(target.host, target.port)
        reason = webhook_targets.refusal(target, addresses, self.targets)
        if reason is not None:
            return f"host {target.host} {reason}"
        return pinned(url, target, addresses[0])
