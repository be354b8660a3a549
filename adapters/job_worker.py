"""A job worker: claims a job, runs it under its lease and until its deadline, stores how
it ended.

Owns: one worker's loop of the job service (adapters/jobs.py starts them in
`run_workers`): `Storage.claim_job` (`FOR UPDATE SKIP LOCKED` on Postgres, so many
gateway processes share one queue without double claims; the claim applies
`core.jobs`' rules in its transaction), one run of the job through the same driver as a
synchronous request (limits, budgets, routing, fallback, the ledger), a heartbeat of the
lease while it runs, and the outcome applied with `core.jobs` in `Storage.update_job`.

- A job left `running` by a stopped process keeps its lease until it expires; then any
  worker reclaims it (attempts + 1), so jobs survive restarts. A job whose attempts are
  spent (its workers keep dying) or whose deadline passed ends at the claim instead
  (`failed`, `aborted` or `canceled`), and is announced; it is not run.
- Each run of a job has a request id derived from the job and the attempt number
  (`attempt_request_id`), so a run lost with its worker (SIGKILL) gets one
  `interrupted` ledger row (through `insert_usage`, so the hourly rollup counts it) when
  its job is next claimed, and never a second: the ledger is unique per request id.
- The job's key is read before the run's deadline scope and the heartbeat start, so
  whatever cuts the attempt finds its driver run, which records its one row. A key
  revoked (or gone) by the time the job runs is refused as a token of that key is (401
  `invalid_api_key`): the run writes its one row with that error (nothing admitted,
  nothing billed) and the job fails. A key that cannot be read (a storage error) is a
  retryable 503 (`storage_unavailable`) for that attempt, recorded the same way: its
  one row, nothing billed, and the job is retried after its backoff (or fails, if it
  was its last attempt). Should that row not be written either (the database still
  away), the next claim of the job writes the attempt's `interrupted` row.
- The run is cut at the job's deadline (the driver records what it consumed, one write
  cancels the job and charges it) or when a heartbeat finds the lease gone (canceled by
  its owner, reclaimed): the ledger row says `canceled`.
- A job keeps the W3C trace context of the request that created it, when tracing is
  on; each run hands it to the driver as the run's `trace_headers`, and the run's span
  links to it (adapters/trace_spans.py).
- A worker survives whatever one run raises (`Cancelled` aside): it logs the error with
  the job id, reports the run as a retryable failure (or, if storage is down, leaves the
  job to its lease expiry) and claims the next job.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import trio
from attrs import evolve

from adapters.driver import Ingress, Run
from adapters.execution import Execution
from adapters.job_records import completion_result, error_of_run, stored_request, stored_trace
from adapters.observe import JobRan
from adapters.storage.base import heartbeat_fn, holds_lease, job_state, with_state
from adapters.storage.outbox_sql import attempt_request_id, interrupted_row
from adapters.storage.records import JobRecord, KeyRecord
from core import jobs as lifecycle
from core.errors import AuthenticationFailed, GatewayError, InvalidRequest, StorageUnavailable
from core.model import GatewayRequest

if TYPE_CHECKING:
    from adapters.jobs import JobService

log = logging.getLogger("umg.jobs")

_RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


class JobWorker:
    """One job worker of `service`, named `name` (the lease holder's name): `run()` claims
    and runs jobs until cancelled."""

    def __init__(self, service: JobService, name: str) -> None:
        self.service = service
        self.name = name
        self.storage = service.storage
        self.clock = service.clock
        self.policy = service.policy

    async def run(self) -> None:
        """Claim and run jobs until cancelled. A run that breaks unexpectedly (a storage
        error, a bug) is logged and reported as a retryable failure, and the worker goes
        on: one bad job or a storage blip never stops the job workers."""
        while True:
            seen = self.service.outage.outages
            try:
                job = await self.storage.claim_job(self.name, self.clock.epoch(), self.policy)
            except self.storage.errors as err:  # the database is away: one line, back off
                await trio.sleep(self.service.outage.failed(err, "claiming a job"))
                continue
            except Exception:
                log.exception("job worker %s could not claim a job; trying again", self.name)
                await trio.sleep(self.service.poll_seconds)
                continue
            self.service.outage.ok(seen)
            if job is None:
                await self.service.wakeup.wait(self.service.poll_seconds)
                continue
            await self._record_lost_attempt(job)
            try:
                if job.status == "running":
                    await self._run(job)
                else:  # claiming ended it (attempts spent, deadline passed)
                    log.warning("job %s failed on claim: %s", job.id,
                                (job.error or {}).get("code"))
                    self._tell_ran(job, None, None, None)
                    self.service.ended(job)
            except Exception as err:
                if isinstance(_only(err), self.storage.errors):
                    self.service.outage.failed(_only(err), f"running job {job.id}")
                else:
                    log.exception("job %s: unexpected error in worker %s", job.id, self.name)
                await self._run_broke(job.id, err)

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
            self.service.outage.failed(err, f"recording job {job.id}'s lost attempt {attempt}")
        except Exception:
            log.exception("job %s: could not record its lost attempt %d", job.id, attempt)

    async def _run_broke(self, job_id: str, err: Exception) -> None:
        """After an unexpected error: report a retryable failure for the run (so the job is
        retried with backoff while attempts are left, then fails), if storage allows;
        else leave the job to the lease expiry (another claim applies the same rules)."""
        cause = _only(err)
        error = GatewayError(f"The job's run failed with an internal error ({type(cause).__name__})")
        outcome: dict[str, Any] = {"error": error, "retryable": True}
        try:
            await self.finish(job_id, outcome)
        except self.storage.errors as down:  # its lease will expire; another claim decides
            await trio.sleep(self.service.outage.failed(down, f"recording job {job_id}'s failed run"))
        except Exception:
            log.exception("job %s: could not record the failed run; its lease will expire",
                          job_id)
            await trio.sleep(self.service.poll_seconds)  # do not spin on a broken storage

    async def _run(self, job: JobRecord) -> None:
        """Run the claimed job under its lease and until its deadline: when the deadline
        comes first the model call is cancelled (the driver settles and records what it
        consumed) and a heartbeat applies `core.jobs`' deadline rule (canceled)."""
        self.service.notify(job)
        started = self.clock.now()
        outcome: dict[str, Any] = {}
        stopped: list[JobRecord] = []
        # Read before the deadline's scope and the heartbeat: whatever cuts the attempt
        # (its deadline, a cancel) then always finds its driver run, which records the
        # attempt's one ledger row (a cut here, before any run, left the attempt with none).
        key, refused = await self._key_of(job)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._heartbeat, job, nursery.cancel_scope, stopped)
            with trio.CancelScope(deadline=self._trio_deadline(job)) as timed:
                await self._execute(job, key, refused, outcome)
            nursery.cancel_scope.cancel()
        run: Run | None = outcome.pop("run", None)
        if timed.cancelled_caught:  # one transition: canceled, with what the run consumed
            assert job.deadline is not None
            now = max(self.clock.epoch(), job.deadline)  # at the deadline, whatever rounding
            ended = await self.storage.update_job(
                job.id, self._timed_out(heartbeat_fn(self.name, now, self.policy), run)
            )
            stopped[:] = [ended] if ended is not None else stopped
            if ended is not None and lifecycle.is_terminal(ended.status):
                self._tell_ran(ended, run, None, started)
                self.service.ended(ended)
                return
        if stopped and lifecycle.is_terminal(stopped[0].status):
            # canceled by its owner (or failed by the machine) while it ran
            ended = await self._charge(job.id, run) or stopped[0]
            self._tell_ran(ended, run, None, started)
            self.service.ended(ended)
        elif outcome:
            await self.finish(job.id, outcome, started)

    def _tell_ran(
        self, job: JobRecord, ran: Run | Execution | None, err: GatewayError | None, started: float | None
    ) -> None:
        """One run's end for the observers (one log line per run, however it ended: done,
        failed, queued for a retry, canceled by its owner or by its deadline, or failed by
        the claim that found its attempts spent); `err`, else the job's error, names the
        error code."""
        observer = self.service.observer
        if observer is None:
            return
        exe = ran.execution if isinstance(ran, Run) else ran
        code = err.code if err is not None else (job.error or {}).get("code")
        observer.job_ran(JobRan(
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
        self, job: JobRecord, work: trio.CancelScope, stopped: list[JobRecord]
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
                found = await self.storage.heartbeat(job_id, self.name, now, self.policy)
            except self.storage.errors as err:
                self.service.outage.failed(err, f"extending job {job_id}'s lease")
                continue
            except Exception:
                log.exception("job %s: heartbeat by %s failed; trying again", job_id, self.name)
                continue
            if not holds_lease(found, self.name):
                log.info("job %s was canceled or lost its lease; stopping it", job_id)
                if found is not None:
                    stopped.append(found)
                work.cancel()
                return

    async def _key_of(self, job: JobRecord) -> tuple[KeyRecord | None, GatewayError | None]:
        """The job's key as it is now, and why it may not run the job (`key_refusal`). A
        storage error reading it refuses this attempt with a retryable 503
        (`StorageUnavailable`): the attempt's run still records its one row (nothing
        admitted, nothing billed), and the job is retried after its backoff like any
        attempt that failed on a 503 (or fails, if that was its last attempt)."""
        try:
            key = await self.storage.key_by_id(job.key_id)
        except self.storage.errors as err:
            self.service.outage.failed(err, f"reading job {job.id}'s key")
            return None, StorageUnavailable(
                "The job's API key could not be read (the gateway's database failed); the"
                " attempt did not run", retry_after=err.retry_after if isinstance(err, GatewayError) else None,
            )
        return key, key_refusal(key)

    async def _execute(
        self, job: JobRecord, key: KeyRecord | None, refused: GatewayError | None,
        outcome: dict[str, Any],
    ) -> None:
        """Run the job's attempt (no checkpoint before its run exists: a run, once
        created, records its row however it is cut). A refusal found before the run
        (`_key_of`: the key revoked or gone since the job was made, or unreadable) refuses
        the run; the run records the refusal as its one row, as it records a body it
        cannot read, and the job fails (or, for a retryable refusal, is retried)."""
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
        run = self.service.gateway.driver.run(
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

    async def finish(self, job_id: str, outcome: dict[str, Any], started: float | None = None) -> None:
        """Apply the run's outcome (`Succeed`, or `Fail` retryable or not) to the row; a
        report from a worker that lost the lease changes nothing."""
        now = self.clock.epoch()
        err: GatewayError | None = outcome.get("error")
        exe = outcome.get("exe")
        if err is None:
            event: lifecycle.JobEvent = lifecycle.Succeed(self.name)
        else:
            event = lifecycle.Fail(self.name, outcome["retryable"], err.message)

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
            self.service.wakeup.at(job.run_after)  # its retry, when the backoff is over
        if job is not None:
            self._tell_ran(job, exe, err, started)
            self.service.notify(job)
            self.service.perform(asked)  # an end is announced once, not again


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
