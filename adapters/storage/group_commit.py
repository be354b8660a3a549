"""One writer task that commits queued ledger rows (and dirty state) in batches.

Owns: the queue between request tasks and the database, and when a batch is committed.

Rules:
- `submit(row)` returns only once the transaction holding `row` has committed, with the
  backend's answer for that row (True: inserted, False: its `request_id` was already
  there). A commit that fails raises the backend's error in every caller of that batch;
  a backend may instead answer an error for some rows only (SQLite and Postgres retry
  a batch refused for one row's values row by row): that row's caller gets it, the
  others their answer. A row is
  never dropped without its caller being told.
- Group commit: while one batch commits, new rows wait in the queue; the next batch
  takes all of them (at most `max_batch`). One row alone is committed at once, so a
  lone request waits no longer than one transaction.
- A row its caller says comes alone (`submit(row, alone=True)`: no other request is in
  flight, so no batch could form) is committed in the caller's own task, when the
  backend can do it without waiting (`commit_now` answers, not None) and the writer is
  idle with nothing queued: no trip to the writer task and back (two scheduler steps).
  It is the same transaction, with the dirty state, the same answers and errors; when
  `commit_now` cannot (a busy file, a busy connection), the row goes to the writer.
- Bounded: at most `capacity` rows are queued or being committed. A caller beyond that
  waits for room (backpressure); no row is ever dropped. A caller cancelled while it
  waits for its commit does not withdraw its row: it is still written.
- Write-behind state: `poke()` says state has become dirty; the writer then commits
  within `flush_seconds` even if no row comes (a row that comes earlier carries the
  state in its batch, see `commit`). A failed state-only flush is logged and tried
  again after `flush_seconds` (on close: tried once).
- `close()` stops new rows (`RuntimeError`), commits everything queued and the dirty
  state, and waits for the writer to end.
- The writer is a Trio system task started on first use, so storage needs no nursery;
  an error it does not expect (a bug) crashes the run loudly instead of hanging callers.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio
from attrs import define, field

log = logging.getLogger("umg.storage")

Row = tuple[Any, ...]
# commit(rows) -> one answer per row (inserted or not, or the error that refused that
# row alone); it also writes the dirty state it takes itself
Answer = bool | BaseException
Commit = Callable[[Sequence[Row]], Awaitable[Sequence[Answer]]]
# commit_now(row) -> a lone row's answer, committed now on the calling thread without
# any wait (it may raise the backend's error), or None when that cannot be done (then
# nothing was written)
CommitNow = Callable[[Row], Answer | None]


def as_driver_error(err: Exception, driver: type[Exception], not_storable: type[Exception]) -> Exception:
    """A refused row's error as its caller gets it: the backend's driver's own error as it
    is, any other (a value the rollups cannot add) wrapped in the backend's `not_storable`
    (a subclass of a `driver` error) with `err` as its cause, so callers treat every
    refusal alike."""
    if isinstance(err, driver):
        return err
    refusal = not_storable(f"the ledger row cannot be stored: {type(err).__name__}: {err}")
    refusal.__cause__ = err
    return refusal


async def row_by_row_on_refusal(
    commit: Callable[[Sequence[Row]], Awaitable[Sequence[bool]]],
    rows: Sequence[Row],
    refused: tuple[type[Exception], ...],
    as_error: Callable[[Exception], Exception],
    backend: str,
) -> list[Answer]:
    """A backend's `Commit` from its one-transaction `commit`: the batch at once, and when
    it is refused for what a row holds (`refused`), each row alone, so only the refused
    row's caller gets the error (as `as_error` makes it); the others are committed and
    answered. A lone row refused is raised. Any other failure fails the whole batch."""
    try:
        return list(await commit(rows))
    except refused as err:
        if len(rows) == 1:
            raise as_error(err)  # noqa: B904  (the same error, or one whose cause is set)
        log.warning("%s refused a batch of %d ledger rows (%s: %s); committing them one by one",
                    backend, len(rows), type(err).__name__, err)
    answers: list[Answer] = []
    for row in rows:
        try:
            answers += await commit([row])
        except refused as one:
            answers.append(as_error(one))
    return answers


@define
class _Pending:
    row: Row
    done: trio.Event = field(factory=trio.Event)
    inserted: bool = False
    error: BaseException | None = None


class GroupCommit:
    def __init__(
        self,
        commit: Commit,
        errors: tuple[type[BaseException], ...],
        *,
        capacity: int = 4096,
        max_batch: int = 512,
        flush_seconds: float = 0.5,
        commit_now: CommitNow | None = None,
    ) -> None:
        self._commit = commit
        self._commit_now = commit_now
        self._writing = False  # the writer task is in a commit
        self._errors = errors
        self._room = trio.Semaphore(capacity)
        self.capacity = capacity
        self._max_batch = max_batch
        self.flush_seconds = flush_seconds
        self._queue: deque[_Pending] = deque()
        self._wake = trio.Event()
        self._deadline: float | None = None  # when dirty state must be committed by
        self._asleep: trio.CancelScope | None = None  # the idle writer's wait, while it waits
        self._started = False
        self._closing = False
        self._stopped = trio.Event()
        self.batches = 0  # transactions committed or tried (for tests and benchmarks)

    @property
    def queued(self) -> int:
        """Rows waiting for a batch."""
        return len(self._queue)

    @property
    def held(self) -> int:
        """Rows taken and not yet answered (queued or being committed), <= capacity."""
        return self.capacity - self._room.value

    def _start(self) -> None:
        if not self._started:
            self._started = True
            trio.lowlevel.spawn_system_task(self._run, name="umg-storage-writer")

    async def submit(self, row: Row, *, alone: bool = False) -> bool:
        if self._closing:
            raise RuntimeError("storage is closed")
        if alone and self._commit_now is not None and not self._queue and not self._writing:
            answer = self._now(row)
            if answer is not None:
                if isinstance(answer, BaseException):
                    raise answer
                return answer
        try:
            self._room.acquire_nowait()  # room (the usual case): no trip through the scheduler
        except trio.WouldBlock:
            await self._room.acquire()
        if self._closing:
            self._room.release()
            raise RuntimeError("storage is closed")
        pending = _Pending(row)
        self._queue.append(pending)
        self._start()
        self._wake.set()
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.inserted

    def _now(self, row: Row) -> Answer | None:
        """`row` committed in the caller's task (see the rules), or None: not done."""
        assert self._commit_now is not None
        deadline = self._deadline
        self._set_deadline(None)  # the commit takes the dirty state
        try:
            answer = self._commit_now(row)
        except self._errors as err:
            self.batches += 1
            log.error("storage writer: a commit of 1 row failed: %s", err)
            self._set_deadline(trio.current_time() + self.flush_seconds)  # the state, again
            return err
        if answer is None:
            if self._deadline is None:  # not set meanwhile
                self._set_deadline(deadline)
            return None
        self.batches += 1
        return answer

    def _set_deadline(self, deadline: float | None) -> None:
        """When the dirty state must be committed by. An idle writer's wait is moved to it
        without waking the writer (one scheduler step less per request); a writer that
        is not waiting is woken, and looks."""
        self._deadline = deadline
        if self._asleep is not None:
            self._asleep.deadline = math.inf if deadline is None else deadline
        elif deadline is not None:
            self._start()
            self._wake.set()

    def poke(self) -> None:
        """State became dirty: make sure it is committed within `flush_seconds`."""
        if self._deadline is None and not self._closing:
            self._set_deadline(trio.current_time() + self.flush_seconds)

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._started:
            await self._stopped.wait()

    # -- the writer task ----------------------------------------------------------------

    def _due(self) -> bool:
        return self._deadline is not None and (
            self._closing or trio.current_time() >= self._deadline
        )

    async def _run(self) -> None:
        try:
            while True:
                if not self._queue and not self._due():
                    if self._closing:
                        return
                    self._wake = trio.Event()
                    with trio.move_on_at(self._deadline if self._deadline is not None else math.inf) as asleep:
                        self._asleep = asleep
                        try:
                            await self._wake.wait()
                        finally:
                            self._asleep = None
                    continue
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
                await self._write(batch)
        finally:
            self._stopped.set()

    async def _write(self, batch: list[_Pending]) -> None:
        self._deadline = None  # the commit takes the dirty state with it
        self.batches += 1
        self._writing = True
        try:
            results = await self._commit([p.row for p in batch])
        except self._errors as err:
            log.error("storage writer: a commit of %d rows failed: %s", len(batch), err)
            if not self._closing:  # the state is tried again; on close, once is enough
                self._deadline = trio.current_time() + self.flush_seconds
            for p in batch:
                p.error = err
        else:
            for p, answer in zip(batch, results, strict=True):
                if isinstance(answer, BaseException):
                    p.error = answer
                else:
                    p.inserted = answer
        finally:
            self._writing = False
            for p in batch:
                p.done.set()
                self._room.release()
