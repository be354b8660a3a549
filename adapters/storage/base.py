"""The `Storage` interface every backend implements (SQLite and Postgres).

Owns: what the rest of the gateway may ask of storage, and the guarantees:

- Atomicity: `update_state`, `update_states` and `update_job` run the caller's function atomically
  with respect to every other task and process using the database. On Postgres that
  is one transaction holding the row's lock (`FOR UPDATE`); `update_job` on SQLite too
  (`BEGIN IMMEDIATE`). `update_state` on SQLite runs on the in-memory copy of the one
  process that owns the file's state (`sqlite.py`; another process gets
  `owner.StorageBusy`). `update_states` is one such update over several scopes at once
  (all or nothing); Postgres locks their rows in sorted scope order, so two callers
  over overlapping scopes cannot deadlock. The function must be quick, must not await and must not
  mutate the state it is given; it runs on the Trio thread (so it may read a Trio
  clock). Whatever it raises leaves the state unchanged and propagates.
- Durability of `update_state`: on Postgres committed before it returns. On SQLite,
  scopes `rl:*`, `key:*` and `budget:*` (rate buckets, key, project and tenant
  budgets) are committed with the next
  `insert_usage` batch or within 0.5 s, whichever is first, and on `close()`; every
  other scope before it returns. So a state change made before `insert_usage(row)`
  is committed no later than `row`.
- `insert_usage` returns once the row is committed (on both backends in a group commit
  with the rows queued meanwhile, see `group_commit.py`). It is idempotent on
  `request_id`: a retried write never double-bills.
- `key_by_prefix` answers from a per-process cache for up to 1 s (`keycache.py`);
  `insert_key` and `revoke_key` through the same Storage apply to it at once.
- Job reads are tenant-scoped (`get_job`, `list_jobs`); workers use `claim_job`,
  `update_job` and `heartbeat`, which are not (they act on ids they claimed).
- A unique key (`id` or `prefix` of a key, `id` of a job) inserted twice raises
  `core.errors.Conflict`; a value that cannot be stored exactly raises `ValueError`.
- Driver errors (`sqlite3.Error`, `psycopg.Error`) propagate except in `health()`,
  which answers False instead (and logs why), and except Postgres being unreachable
  (connection lost or refused, no connection in time): that is
  `core.errors.StorageUnavailable`, a 503 with `retry_after` (`postgres.py`). A
  Postgres transaction rolled back for a deadlock or a serialization failure is run
  again (a few times, then `StorageContention`, a `StorageUnavailable`): so the
  functions given to `update_state`, `update_states`, `update_job`, `update_delivery`
  and `idempotency_step` may be called more than once, and only the last call's result
  counts.
- `idempotency_step` applies a pure function to one key's row under its lock.
- Job status changes made by storage itself (`claim_job`, `heartbeat`) are
  `core.jobs.apply` on the locked row, through the helpers below that both backends
  share (`claim_record`, `heartbeat_fn`): the SQL only finds and locks the row. So a
  job whose attempts are spent, or whose deadline passed, ends `failed`
  (`job_attempts_exhausted` / `job_deadline_exceeded`) instead of being run again.
- `prune` deletes in bounded batches, one transaction each (`prune.py`): only what the
  cut-offs of `core.retention` let go, never a running job, a held idempotency claim,
  a live stream or the current budget period. On SQLite a period pruned from the file
  is dropped from the owner's memory too (unless changed there and not yet committed:
  then it is kept).
- The ledger reads (`ledger_page`, `usage_series`, `usage_histogram`, `usage_totals`) are the same SQL
  on both backends (`ledger.py`, one `Dialect` each): `LedgerReads` runs them, given a
  backend's dialect, its way to run a query, and its row decoder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar, cast

from attrs import evolve

from adapters.storage import codec, ledger
from adapters.storage.idem_rows import StepFn
from adapters.storage.ledger import (
    Bucket,
    Dialect,
    Histogram,
    LedgerFilter,
    Metric,
    Query,
    SeriesRow,
)
from adapters.storage.records import BudgetRecord, DeliveryRecord, JobRecord, KeyRecord, UsageRecord
from adapters.storage.streams import StoredEvent, StreamHead, StreamWrite
from core import jobs as lifecycle
from core import outbox
from core.retention import Cutoffs
from core.usage import UsageSummary, combine

T = TypeVar("T")

State = dict[str, Any]
StateFn = Callable[[State | None], tuple[T, State]]
# `update_states`: the states of the scopes asked for (None: never written) -> new states
StatesFn = Callable[[dict[str, State | None]], tuple[T, dict[str, State]]]
JobFn = Callable[[JobRecord], JobRecord]
DeliveryFn = Callable[[DeliveryRecord], DeliveryRecord]
# What `update_key` may change; the rest of a key (its secret, tenant, admin flag) is fixed.
KEY_MUTABLE = ("name", "rpm", "tpm", "budget_usd", "budget_period")


BUDGET_COLUMNS = "tenant, project, budget_usd, budget_period, updated_at"


def budget_upsert_sql(mark: str) -> str:
    """Insert or replace one (tenant, project) budget; `mark` is the driver's placeholder."""
    return (
        f"INSERT INTO budgets ({BUDGET_COLUMNS}) VALUES ({', '.join([mark] * 5)})"
        " ON CONFLICT (tenant, project) DO UPDATE SET budget_usd = excluded.budget_usd,"
        " budget_period = excluded.budget_period, updated_at = excluded.updated_at"
    )


def budget_list_sql(mark: str, tenant: str | None) -> tuple[str, tuple[str, ...]]:
    where, args = ("", ()) if tenant is None else (f" WHERE tenant = {mark}", (tenant,))
    return f"SELECT {BUDGET_COLUMNS} FROM budgets{where} ORDER BY tenant, project", args


def key_changes(changes: dict[str, Any]) -> list[tuple[str, Any]]:
    """`changes` as (column, value) pairs in column order; ValueError for any other field."""
    unknown = set(changes) - set(KEY_MUTABLE)
    if unknown:
        raise ValueError(f"update_key cannot change {sorted(unknown)}")
    return [(c, changes[c]) for c in KEY_MUTABLE if c in changes]


# -- the job row <-> core.jobs machine (shared by every backend and the job runner) ----


def claimable_where(mark: str) -> str:
    """The SQL condition mirroring `core.jobs.claimable`; takes `now` twice (`mark` is
    the driver's placeholder)."""
    return (
        f"((status = 'queued' AND run_after <= {mark})"
        f" OR (status = 'running' AND lease_expires < {mark}))"
    )


JOB_COUNTS = "SELECT status, count(*) FROM jobs GROUP BY status"


def job_list_query(
    columns: str, mark: str, tenant: str, status: str | None, limit: int, after: str | None
) -> tuple[str, list[Any]]:
    """SQL and arguments for one page of a tenant's jobs, newest first, after the job
    `after` (keyset paging on (created_at, id)); `mark` is the driver's placeholder."""
    where, args = [f"tenant = {mark}"], [tenant]
    if status is not None:
        where.append(f"status = {mark}")
        args.append(status)
    if after is not None:
        where.append(
            f"(created_at, id) < (SELECT created_at, id FROM jobs WHERE tenant = {mark}"
            f" AND id = {mark})"
        )
        args += [tenant, after]
    sql = (
        f"SELECT {columns} FROM jobs WHERE {' AND '.join(where)}"
        f" ORDER BY created_at DESC, id DESC LIMIT {mark}"
    )
    return sql, [*args, limit]


def job_state(job: JobRecord) -> lifecycle.JobState:
    return lifecycle.JobState(
        status=cast(lifecycle.JobStatus, job.status),
        attempts=job.attempts,
        run_after=job.run_after,
        lease_owner=job.lease_owner,
        lease_expires=job.lease_expires,
        deadline=job.deadline,
        error=None if job.error is None else str(job.error.get("message")),
        cancel_requested=job.cancel_requested,
    )


def with_state(job: JobRecord, state: lifecycle.JobState) -> JobRecord:
    """`job` with the machine's fields from `state` (its `error` string is not copied: the
    record keeps an OpenAI-style error object, which the caller decides)."""
    return evolve(
        job,
        status=state.status,
        attempts=state.attempts,
        run_after=state.run_after,
        lease_owner=state.lease_owner,
        lease_expires=state.lease_expires,
        cancel_requested=state.cancel_requested,
    )


def _ended_by_machine(
    job: JobRecord, state: lifecycle.JobState, now: float, policy: lifecycle.JobPolicy
) -> JobRecord:
    error = lifecycle.machine_error(state, policy).to_body()["error"]
    return evolve(with_state(job, state), error=dict(error),
                  completed_at=datetime.fromtimestamp(now, UTC))


def claim_record(
    job: JobRecord, worker: str, now: float, policy: lifecycle.JobPolicy
) -> JobRecord:
    """The row after `Claim(worker, now)`: running (attempts + 1, `started_at` set once,
    `error` cleared), or failed when no attempt is left or the deadline passed. Raises
    `NotClaimable` for a row the "next job" query should not have picked."""
    state = lifecycle.apply(job_state(job), lifecycle.Claim(worker), now, policy)
    if state.status == "running":
        started = job.started_at or datetime.fromtimestamp(now, UTC)
        return evolve(with_state(job, state), error=None, started_at=started)
    return _ended_by_machine(job, state, now, policy)


def heartbeat_fn(worker: str, now: float, policy: lifecycle.JobPolicy) -> JobFn:
    """For `update_job`: `Heartbeat(worker, now)`. The lease is extended while `worker`
    owns the running job; at or past the deadline the job fails; a worker that lost the
    lease (or a job already ended) leaves the row unchanged."""

    def apply(job: JobRecord) -> JobRecord:
        try:
            state = lifecycle.apply(job_state(job), lifecycle.Heartbeat(worker), now, policy)
        except lifecycle.LeaseLost:
            return job
        if lifecycle.is_terminal(state.status) and not lifecycle.is_terminal(job.status):
            return _ended_by_machine(job, state, now, policy)
        return with_state(job, state)

    return apply


def holds_lease(job: JobRecord | None, worker: str) -> bool:
    return job is not None and job.status == "running" and job.lease_owner == worker


USAGE_COLUMNS = ", ".join(codec.columns(UsageRecord))


class LedgerReads:
    """The ledger reads of both backends: each gives its `dialect`, `_fetch` (one query,
    every row) and `_usage_record` (a `usage` row as a record)."""

    dialect: Dialect

    async def _fetch(self, query: Query) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _usage_record(self, row: tuple[Any, ...]) -> UsageRecord:
        raise NotImplementedError

    async def ledger_page(
        self, f: LedgerFilter, limit: int, after: str | None
    ) -> list[UsageRecord]:
        rows = await self._fetch(ledger.page_query(self.dialect, USAGE_COLUMNS, f, limit, after))
        return [self._usage_record(r) for r in rows]

    async def usage_series(
        self, f: LedgerFilter, bucket: Bucket, by: str | None
    ) -> list[SeriesRow]:
        found: list[SeriesRow] = []
        for query in ledger.series_queries(self.dialect, f, bucket, by):
            found += [ledger.series_row(r) for r in await self._fetch(query)]
        return ledger.merge_series(found)

    async def usage_histogram(
        self, f: LedgerFilter, bucket: Bucket, metric: Metric
    ) -> Histogram:
        return ledger.merge_histograms([
            ledger.histogram_counts(await self._fetch(query))
            for query in ledger.histogram_queries(self.dialect, f, bucket, metric)
        ])  # fmt: skip

    async def usage_totals(self, f: LedgerFilter, group_by: tuple[str, ...]) -> UsageSummary:
        parts = []
        for query in ledger.totals_queries(self.dialect, f, group_by):
            parts += ledger.totals_parts(group_by, await self._fetch(query))
        return combine(parts)


class Storage(Protocol):
    # True when other processes change the same state concurrently (Postgres); False
    # when this process owns it (SQLite: `update_state` is in memory, no round trip).
    shared: bool
    # The driver's own errors (sqlite3.Error, psycopg.Error), for a background writer
    # that logs a failed batch and tries it again instead of crashing.
    errors: tuple[type[Exception], ...]

    async def migrate(self) -> None:
        """Create or upgrade the tables; safe to run from many processes at once."""

    async def close(self) -> None: ...

    async def health(self) -> bool: ...

    # -- keys ------------------------------------------------------------------------
    async def insert_key(self, rec: KeyRecord) -> None: ...

    async def key_by_prefix(self, prefix: str) -> KeyRecord | None: ...

    async def key_by_id(self, key_id: str) -> KeyRecord | None: ...

    async def list_keys(self, tenant: str | None = None) -> list[KeyRecord]:
        """Keys (oldest first), of one tenant or all."""

    async def revoke_key(self, id_or_prefix: str, at: datetime) -> KeyRecord | None:
        """Mark the key revoked at `at` (kept if already revoked); None if no such key."""

    async def count_keys(self) -> int: ...

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> KeyRecord | None:
        """Set the given `KEY_MUTABLE` columns of one key; the key as it now is, or None."""

    # -- usage ledger ----------------------------------------------------------------
    async def insert_usage(self, rec: UsageRecord, *, alone: bool = False) -> bool:
        """Write one ledger row; False (and no change) if `request_id` is already there.
        `alone`: the caller knows no other request is in flight (so no batch could form);
        a backend may then commit the row in the caller's task instead of its writer's."""

    async def usage_rows(self, tenant: str, start: datetime, end: datetime) -> list[UsageRecord]:
        """The tenant's rows with `start <= at < end`, in time order."""

    async def usage_count(self) -> int: ...

    async def job_counts(self) -> dict[str, int]:
        """Jobs per status, every tenant (the metrics' queue depth: `queued`)."""

    async def ledger_page(
        self, f: LedgerFilter, limit: int, after: str | None
    ) -> list[UsageRecord]:
        """Rows matching `f`, newest first, after the row whose id is `after`."""

    async def usage_series(
        self, f: LedgerFilter, bucket: Bucket, by: str | None
    ) -> list[SeriesRow]:
        """Requests, errors, tokens and cost per (hour or day, value of column `by`)."""

    async def usage_histogram(
        self, f: LedgerFilter, bucket: Bucket, metric: Metric
    ) -> Histogram:
        """Rows per `core.percentiles` bin of `metric`, per hour or day (buckets without
        a value left out)."""

    async def usage_totals(self, f: LedgerFilter, group_by: tuple[str, ...]) -> UsageSummary:
        """`core.usage.aggregate` of the rows matching `f`, summed in the database
        (`group_by`: `core.usage.DIMENSIONS`, checked by the caller; ValueError else)."""

    # -- generic atomic state --------------------------------------------------------
    async def update_state(self, scope: str, fn: StateFn[T]) -> T:
        """Atomically replace the JSON state of `scope` by `fn(state)[1]`; return `[0]`."""

    async def read_state(self, scope: str) -> State | None: ...

    async def read_states(self, scopes: list[str]) -> dict[str, State | None]:
        """`read_state` of each scope, in one query (None for a scope never written)."""

    async def update_states(self, scopes: tuple[str, ...], fn: StatesFn[T]) -> T:
        """`update_state` over several scopes in one atomic step: `fn` gets every scope's
        state and returns the new state of every scope."""

    # -- project and tenant budgets ----------------------------------------------------
    async def put_budget(self, rec: BudgetRecord) -> None:
        """Set (or replace) the budget of (`rec.tenant`, `rec.project`)."""

    async def delete_budget(self, tenant: str, project: str) -> bool:
        """Remove a budget; False if there was none."""

    async def list_budgets(self, tenant: str | None = None) -> list[BudgetRecord]:
        """Budgets of one tenant or of all, by (tenant, project)."""

    # -- jobs ------------------------------------------------------------------------
    async def insert_job(self, rec: JobRecord) -> None: ...

    async def get_job(self, tenant: str, job_id: str) -> JobRecord | None: ...

    async def list_jobs(
        self, tenant: str, status: str | None, limit: int, after: str | None
    ) -> list[JobRecord]:
        """Newest first; `after` is the id of the last job of the previous page
        (an id the tenant does not have gives an empty page)."""

    async def claim_job(
        self, worker: str, now: float, policy: lifecycle.JobPolicy
    ) -> JobRecord | None:
        """Apply `Claim(worker, now)` to the oldest job that is queued with
        `run_after <= now`, or running with an expired lease (`claim_record`), and return
        it: running (leased to `worker` until `now + policy.lease_seconds`, attempts + 1,
        `started_at` set if unset), or `failed` when its attempts are spent or its
        deadline passed (the caller announces it and claims again). None when there is
        nothing to do."""

    async def update_job(self, job_id: str, fn: JobFn) -> JobRecord | None:
        """Atomic read-modify-write of one job (its id cannot change); None if absent."""

    async def heartbeat(
        self, job_id: str, worker: str, now: float, policy: lifecycle.JobPolicy
    ) -> JobRecord | None:
        """Apply `Heartbeat(worker, now)` (`heartbeat_fn`) and return the job as it now is
        (None if absent). The worker keeps going only while `holds_lease(job, worker)`."""

    # -- idempotency keys -----------------------------------------------------------
    async def idempotency_step(self, tenant: str, key: str, fn: StepFn[T]) -> T:
        """Atomically replace the record of (tenant, key) by `fn(record)[1]` (None: no
        row) and return `[0]` (`idem_rows.step_in`). A fresh key is claimed by one INSERT
        ... ON CONFLICT DO NOTHING, so two processes never both get it. `fn` is pure
        (`core.idempotency.step`) and runs in the database's worker thread."""

    # -- the webhook outbox (core.outbox; adapters/storage/outbox_sql.py) -----------
    async def claim_delivery(
        self, worker: str, now: float, policy: outbox.DeliveryPolicy
    ) -> DeliveryRecord | None:
        """Apply `Claim(worker)` to the most overdue delivery (pending and due, or sending
        under a dead lease) and return it; None when nothing is due. On Postgres the row
        is taken with SKIP LOCKED: two processes never claim the same attempt."""

    async def update_delivery(self, delivery_id: str, fn: DeliveryFn) -> DeliveryRecord | None:
        """Atomic read-modify-write of one delivery (`fn` is pure); None if absent."""

    async def deliveries_of_job(self, job_id: str) -> list[DeliveryRecord]:
        """The job's outbox rows, oldest first."""

    async def webhook_secret(self, tenant: str, fresh: str) -> str:
        """The tenant's webhook signing secret; `fresh` is stored as it if there is none
        (atomically: concurrent first uses agree on one)."""

    # -- stored response events (streams.py) -----------------------------------------
    async def stream_write(self, writes: Sequence[StreamWrite]) -> None:
        """Upsert each head and add its new events, all in one transaction (idempotent)."""

    async def stream_read(
        self, tenant: str, stream_id: str, after: int
    ) -> tuple[StreamHead | None, list[StoredEvent]]:
        """The tenant's stream head (None: absent or another tenant's) and its events with
        `seq > after`, in order. Expiry is the caller's rule."""

    async def stream_prune(self, now: float) -> int:
        """Delete every stream (head and events) with `expires_at <= now`; how many."""

    # -- retention (prune.py; core/retention.py decides what may go) -------------------
    async def prune(self, store: str, cut: Cutoffs, limit: int) -> int:
        """Delete at most `limit` rows of each table of `store` (`core.retention.STORES`)
        that `cut` lets go, in one short transaction; how many (0: nothing is left)."""

    async def prunable(self, store: str, cut: Cutoffs) -> int:
        """How many rows of `store` a prune at `cut` would delete now (deletes nothing)."""
