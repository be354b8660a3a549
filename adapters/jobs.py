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
- A job keeps the W3C trace context (`traceparent` / `tracestate`) of the request that
  created it, when tracing is on; each run hands it to the driver as the run's
  `trace_headers`, and a job's run span links to it (adapters/trace_spans.py).
- A job whose key was revoked (or is gone) by the time it runs is refused as a token of
  that key is (401 `invalid_api_key`): the run writes its one ledger row with that error
  (nothing admitted, nothing billed) and the job fails.
- Cancel marks the job canceled at once; a worker running it sees that at its next
  heartbeat and cancels the model call (the ledger records what was consumed).
- Webhooks are `adapters/webhook_delivery.py`'s: storage writes a job's messages into the
  outbox in the transaction that changes the job (`core.outbox` says which), and this
  service only wakes the delivery workers it runs beside its job workers.
- Each run of a job has a request id derived from the job and the attempt number
  (`attempt_request_id`), so a run lost with its worker (SIGKILL) gets one
  `interrupted` ledger row (through `insert_usage`, so the hourly rollup counts it) when
  its job is next claimed, and never a second: the ledger is unique per request id.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import trio
from attrs import evolve

from adapters.clock import Clock
from adapters.driver import Ingress, Run, new_id
from adapters.execution import Execution
from adapters.gateway import Gateway
from adapters.observe import JobRan, Observer
from adapters.outage import Outage
from adapters.storage.base import Storage, heartbeat_fn, holds_lease, job_state, with_state
from adapters.storage.outbox_sql import attempt_request_id, interrupted_row
from adapters.storage.records import JobRecord, KeyRecord
from adapters.wakeup import Wakeup
from adapters.webhook_delivery import Deliverer
from core import jobs as lifecycle
from core import request_codec
from core.errors import AuthenticationFailed, Conflict, GatewayError, InvalidRequest, NotFound
from core.model import Completion, GatewayRequest

log = logging.getLogger("umg.jobs")

_RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


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
TRACE_KEYS = ("traceparent", "tracestate")


def stored_form(
    body: dict[str, Any], request: GatewayRequest, trace: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """What a job row keeps as its request: the client's body and the core encoding, and
    the trace context of the request that created it (if any)."""
    form = {_STORED: request_codec.VERSION, "body": body, "core": request_codec.encode(request)}
    if trace:
        form["trace"] = dict(trace)
    return form


def stored_trace(job: JobRecord) -> dict[str, str]:
    """The trace context the job was created in ({} when none was kept)."""
    trace = job.request.get("trace")
    if not isinstance(trace, dict):
        return {}
    return {k: v for k, v in trace.items() if k in TRACE_KEYS and isinstance(v, str)}


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
        deliverer: Deliverer,
        policy: lifecycle.JobPolicy | None = None,
        poll_seconds: float = 0.5,
        delivery_workers: int = 2,
        outage: Outage | None = None,
    ) -> None:
        self.storage = storage
        self.gateway = gateway
        self.clock = clock
        self.deliverer = deliverer
        self.policy = policy or lifecycle.JobPolicy()
        self.poll_seconds = poll_seconds
        self.delivery_workers = delivery_workers
        # one line when the database goes away, one when it is back; shared with the
        # delivery workers (adapters/outage.py)
        self.outage = outage or Outage(clock, log, base=poll_seconds)
        deliverer.outage = self.outage
        self._changed: dict[str, trio.Event] = {}
        self._wakeup = Wakeup(clock)
        self.observer: Observer | None = None  # told of job runs (deliveries: Deliverer.observer)

    # -- API side ----------------------------------------------------------------------

    async def create(
        self, key: KeyRecord, request: GatewayRequest, body: dict[str, Any],
        webhook_url: str | None, trace: Mapping[str, str] | None = None, *,
        events: tuple[str, ...] | None = None, deadline: float | None = None,
    ) -> JobRecord:
        """Store `request` (already parsed: a bad one was refused by the caller) with the
        JSON `body` it came as, and `trace`, the creating request's trace context."""
        self.gateway.catalog.resolve(request.model)  # an unknown model: 404 model_not_found
        now = self.clock.epoch()
        job = JobRecord(
            id=new_id("job"),
            tenant=key.tenant,
            project=key.project,
            key_id=key.id,
            request=stored_form(body, request, trace),
            status="queued",
            attempts=0,
            run_after=now,
            lease_owner=None,
            lease_expires=None,
            deadline=deadline,
            cancel_requested=False,
            result=None,
            error=None,
            cost=None,
            webhook_url=webhook_url,
            created_at=self.clock.wall(),
            started_at=None,
            completed_at=None,
            webhook_events_filter=events,
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
        del job
        if any(isinstance(action, lifecycle.Announce) for action in actions):
            self.deliverer.wakeup.set()  # storage put its messages in the outbox

    async def wait(self, tenant: str, job_id: str, seconds: float) -> JobRecord:
        """The job once terminal, or as it is after `seconds`."""
        job = await self.get(tenant, job_id)
        with trio.move_on_after(seconds):
            while not lifecycle.is_terminal(job.status):
                await self.changed(job_id, self.poll_seconds)
                job = await self.get(tenant, job_id)
        return job

    async def changed(self, job_id: str, seconds: float) -> None:
        """Until this process changes the job (claim, finish, cancel), at most `seconds`."""
        event = self._changed.setdefault(job_id, trio.Event())
        with trio.move_on_after(seconds):
            await event.wait()
        if self._changed.get(job_id) is event and not event.statistics().tasks_waiting:
            del self._changed[job_id]  # nobody waits on it now: not kept for a remote job

    def wake(self) -> None:
        """Wake idle job and delivery workers (new work may be there: a NOTIFY came)."""
        self._wakeup.set()
        self.deliverer.wakeup.set()

    def _notify(self, job: JobRecord) -> None:
        event = self._changed.pop(job.id, None)
        if event is not None:
            event.set()

    # -- workers -----------------------------------------------------------------------

    async def run_workers(self, count: int) -> None:
        """Run `count` job workers and the webhook delivery workers until cancelled.
        Cancelling (shutdown) loses nothing: a running job keeps its lease until it
        expires, a pending webhook retry stays in the outbox."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.deliverer.run, self.delivery_workers)
            for n in range(count):
                nursery.start_soon(self._worker, f"w{n}-{secrets.token_hex(4)}")

    async def _worker(self, name: str) -> None:
        """Claim and run jobs until cancelled. A run that breaks unexpectedly (a storage
        error, a bug) is logged and reported as a retryable failure, and the worker goes
        on: one bad job or a storage blip never stops the job workers."""
        while True:
            try:
                job = await self.storage.claim_job(name, self.clock.epoch(), self.policy)
            except self.storage.errors as err:  # the database is away: one line, back off
                await trio.sleep(self.outage.failed(err, "claiming a job"))
                continue
            except Exception:
                log.exception("job worker %s could not claim a job; trying again", name)
                await trio.sleep(self.poll_seconds)
                continue
            self.outage.ok()
            if job is None:
                await self._wakeup.wait(self.poll_seconds)
                continue
            await self._record_lost_attempt(job)
            try:
                if job.status == "running":
                    await self._run(name, job)
                else:  # claiming ended it (attempts spent, deadline passed)
                    log.warning("job %s failed on claim: %s", job.id,
                                (job.error or {}).get("code"))
                    self._tell_ran(job, None, None, None)
                    await self._ended(job)
            except Exception as err:
                if isinstance(_only(err), self.storage.errors):
                    self.outage.failed(_only(err), f"running job {job.id}")
                else:
                    log.exception("job %s: unexpected error in worker %s", job.id, name)
                await self._run_broke(name, job.id, err)

    async def _record_lost_attempt(self, job: JobRecord) -> None:
        """After a claim: the attempt before this one (or the last one, when the claim
        ended the job) has its ledger row, or its worker died without writing it; then it
        gets its one `interrupted` row now (the ledger is unique per request id, so a row
        already written, by that worker or an earlier claim, stays the only one)."""
        attempt = job.attempts - 1 if job.status == "running" else job.attempts
        if attempt < 1:
            return
        try:
            await self.storage.insert_usage(interrupted_row(job, attempt, self.clock.wall()))
        except self.storage.errors as err:
            self.outage.failed(err, f"recording job {job.id}'s lost attempt {attempt}")
        except Exception:
            log.exception("job %s: could not record its lost attempt %d", job.id, attempt)

    async def _run_broke(self, worker: str, job_id: str, err: Exception) -> None:
        """After an unexpected error: report a retryable failure for the run (so the job is
        retried with backoff while attempts are left, then fails), if storage allows;
        else leave the job to the lease expiry (another claim applies the same rules)."""
        err = _only(err)
        error = GatewayError(f"The job's run failed with an internal error ({type(err).__name__})")
        outcome: dict[str, Any] = {"error": error, "retryable": True}
        try:
            await self._finish(worker, job_id, outcome)
        except self.storage.errors as down:  # its lease will expire; another claim decides
            await trio.sleep(self.outage.failed(down, f"recording job {job_id}'s failed run"))
        except Exception:
            log.exception("job %s: could not record the failed run; its lease will expire",
                          job_id)
            await trio.sleep(self.poll_seconds)  # do not spin on a broken storage

    async def _ended(self, job: JobRecord) -> None:
        self._notify(job)
        if lifecycle.is_terminal(job.status):
            self.deliverer.wakeup.set()  # storage put its messages in the outbox

    async def _run(self, worker: str, job: JobRecord) -> None:
        """Run the claimed job under its lease and until its deadline: when the deadline
        comes first the model call is cancelled (the driver settles and records what it
        consumed) and a heartbeat applies `core.jobs`' deadline rule (canceled)."""
        self._notify(job)
        started = self.clock.now()
        outcome: dict[str, Any] = {}
        stopped: list[JobRecord] = []
        # Read before the deadline's scope and the heartbeat: whatever cuts the attempt
        # (its deadline, a cancel) then always finds its driver run, which records the
        # attempt's one ledger row (a cut here, before any run, left the attempt with none).
        key = await self.storage.key_by_id(job.key_id)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._heartbeat, worker, job, nursery.cancel_scope, stopped)
            with trio.CancelScope(deadline=self._trio_deadline(job)) as timed:
                await self._execute(job, key, outcome)
            nursery.cancel_scope.cancel()
        run: Run | None = outcome.pop("run", None)
        if timed.cancelled_caught:  # one transition: canceled, with what the run consumed
            assert job.deadline is not None
            now = max(self.clock.epoch(), job.deadline)  # at the deadline, whatever rounding
            ended = await self.storage.update_job(
                job.id, self._timed_out(heartbeat_fn(worker, now, self.policy), run)
            )
            stopped[:] = [ended] if ended is not None else stopped
            if ended is not None and lifecycle.is_terminal(ended.status):
                self._tell_ran(ended, run, None, started)
                await self._ended(ended)
                return
        if stopped and lifecycle.is_terminal(stopped[0].status):
            # canceled by its owner (or failed by the machine) while it ran
            ended = await self._charge(job.id, run) or stopped[0]
            self._tell_ran(ended, run, None, started)
            await self._ended(ended)
        elif outcome:
            await self._finish(worker, job.id, outcome, started)

    def _tell_ran(
        self, job: JobRecord, ran: Run | Execution | None, err: GatewayError | None, started: float | None
    ) -> None:
        """One run's end for the observers (one log line per run, however it ended: done,
        failed, queued for a retry, canceled by its owner or by its deadline, or failed by
        the claim that found its attempts spent); `err`, else the job's error, names the
        error code."""
        if self.observer is None:
            return
        exe = ran.execution if isinstance(ran, Run) else ran
        code = err.code if err is not None else (job.error or {}).get("code")
        self.observer.job_ran(JobRan(
            job_id=job.id, tenant=job.tenant, request_id=exe.request_id if exe is not None else None,
            status=job.status, attempt=job.attempts, error_code=code if job.status != "succeeded" else None,
            seconds=self.clock.now() - started if started is not None else 0.0,
        ))  # fmt: skip

    def _trio_deadline(self, job: JobRecord) -> float:
        if job.deadline is None:
            return math.inf
        return self.clock.now() + (job.deadline - self.clock.epoch())

    @staticmethod
    def _timed_out(beat: Callable[[JobRecord], JobRecord], run: Run | None) -> Callable[[JobRecord], JobRecord]:
        spent = run.execution.cost if run is not None and run.execution is not None else None

        def apply(job: JobRecord) -> JobRecord:
            new = beat(job)
            if spent is None or lifecycle.is_terminal(job.status) or new.status == job.status:
                return new
            return evolve(new, cost=(new.cost or Decimal(0)) + spent)

        return apply

    async def _charge(self, job_id: str, run: Run | None) -> JobRecord | None:
        """Add what a stopped run consumed (its ledger row's cost) to the job's cost."""
        exe = run.execution if run is not None else None
        if exe is None:
            return None
        spent = exe.cost

        def add(job: JobRecord) -> JobRecord:
            return evolve(job, cost=(job.cost or Decimal(0)) + spent)

        return await self.storage.update_job(job_id, add)

    async def _heartbeat(
        self, worker: str, job: JobRecord, work: trio.CancelScope, stopped: list[JobRecord]
    ) -> None:
        """Every lease/3, `Heartbeat` the job; when the worker no longer holds the lease
        (canceled, reclaimed, gone) stop the work. At its deadline it stops beating: the
        run's own deadline ends the job (canceled, charged what the run consumed in the
        same write); if that never happens the lease expires and a claim cancels it. A
        heartbeat that fails on a storage error is logged and tried again at the next
        tick: the lease outlives two missed beats, and a reclaimed job drops this
        worker's late report anyway."""
        job_id = job.id
        while True:
            await trio.sleep(self.policy.lease_seconds / 3)
            now = self.clock.epoch()
            if job.deadline is not None and now >= job.deadline:
                await trio.sleep_forever()  # the run's deadline scope is ending it
            try:
                found = await self.storage.heartbeat(job_id, worker, now, self.policy)
            except self.storage.errors as err:
                self.outage.failed(err, f"extending job {job_id}'s lease")
                continue
            except Exception:
                log.exception("job %s: heartbeat by %s failed; trying again", job_id, worker)
                continue
            if not holds_lease(found, worker):
                log.info("job %s was canceled or lost its lease; stopping it", job_id)
                if found is not None:
                    stopped.append(found)
                work.cancel()
                return

    async def _execute(self, job: JobRecord, key: KeyRecord | None, outcome: dict[str, Any]) -> None:
        """Run the job's attempt (no checkpoint before its run exists: a run, once
        created, records its row however it is cut). A key revoked or gone since the job
        was made refuses the run (`key_refusal`); the run records the refusal as its one
        row, as it records a body it cannot read, and the job fails."""
        refused = key_refusal(key)

        async def parse() -> GatewayRequest:
            if refused is not None:
                raise refused
            try:
                return stored_request(job)
            except ValueError as err:
                raise InvalidRequest(f"The job's stored request cannot be run: {err}") from None

        # A job's run is not cut by the HTTP drain: its lease outlives a restart. Canceled,
        # lease lost or shut down, the ledger says "canceled".
        outcome["request_id"] = attempt_request_id(job.id, job.attempts)
        run = self.gateway.driver.run(
            Ingress(
                outcome["request_id"], "jobs", parse, key=key or stand_in_key(job),
                outside_cancel="canceled", tracked=False, trace_headers=stored_trace(job),
            )
        )
        outcome["run"] = run  # a stopped run is charged what it consumed
        try:
            await run.open()
            completion = await run.collect()
        except GatewayError as err:
            outcome.update(error=err, retryable=err.status in _RETRYABLE_STATUSES, exe=run.execution)
        else:
            outcome.update(result=completion_result(completion, run.exe.gateway_info()), exe=run.exe)

    async def _finish(
        self, worker: str, job_id: str, outcome: dict[str, Any], started: float | None = None
    ) -> None:
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
            body = error_of_run(err, outcome.get("request_id"))
            if state.status == "failed":
                return evolve(updated, error=body, completed_at=self.clock.wall())
            return evolve(updated, error=body)

        job = await self.storage.update_job(job_id, apply)
        if job is not None and job.status == "queued":
            self._wakeup.at(job.run_after)  # its retry, when the backoff is over
        if job is not None:
            self._tell_ran(job, exe, err, started)
            self._notify(job)
            await self._perform(job, asked)  # an end is announced once, not again


def key_refusal(key: KeyRecord | None) -> AuthenticationFailed | None:
    """Why the job's key (looked up when the job runs) may not run it: gone, or revoked
    (the 401 a token of that key gets from the driver); None when it may."""
    if key is None:
        return AuthenticationFailed("The API key that created this job no longer exists")
    if key.revoked_at is not None:
        return AuthenticationFailed("This API key has been revoked")
    return None


def stand_in_key(job: JobRecord) -> KeyRecord:
    """What a run of a job whose key is gone is recorded under: the job's tenant, project
    and key id (it is refused before anything reads the key's limits)."""
    return KeyRecord(
        id=job.key_id, prefix="", secret_hash="", tenant=job.tenant, project=job.project,
        name=None, rpm=None, tpm=None, budget_usd=None, budget_period="total",
        created_at=job.created_at, revoked_at=None,
    )  # fmt: skip


def _only(err: BaseException) -> BaseException:
    """What a run raised, out of the single-exception groups its nurseries wrap it in."""
    while isinstance(err, BaseExceptionGroup) and len(err.exceptions) == 1:
        err = err.exceptions[0]
    return err


def error_of_run(err: GatewayError | None, request_id: str | None) -> dict[str, Any] | None:
    """The job's `error` object: the OpenAI error shape, with the request id of the run
    that failed (the ledger row's) when there was one, as every error body carries."""
    if err is None:
        return None
    body: dict[str, Any] = err.to_body()["error"]
    return body if request_id is None else {**body, "request_id": request_id}
