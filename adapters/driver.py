"""The request driver: ONE path from a caller's key to one ledger row, for every surface.

Owns: the whole lifecycle of one model request, whichever surface it came from (sync
JSON, SSE, WebSocket, jobs): authenticate, parse, admit (rate limits, routing, provider
checks, the first budget grant), the attempt loop, settling, exactly one ledger row, and
the final status (`core.outcome`). Surfaces only frame the neutral events it emits; it
knows nothing of Quart, HTTP or wire formats, so it can be called from any ASGI layer.
This module is what a surface calls (`Driver`, `Run`, and `Ingress` / `new_id` /
`ChecksRequests` from adapters/ingress.py); `Run` is one run's state
(adapters/run_state.py) with the API below, and each decision of the run is a module of
functions over that state: admission (run_admission.py), the attempt loop
(run_attempts.py), the relay of upstream reads (run_relay.py), the grants
(run_grants.py) and the end (run_end.py).

API:

    run = driver.run(Ingress(request_id, endpoint, parse, token=... | key=...))
    exe = await run.open()          # raises GatewayError before any byte is sent
    await run.drive(emit)           # emit(event) for each RunEvent; never raises a
                                    # GatewayError (it becomes a Failed event);
                                    # together=True: a read's pieces as one Pieces
    completion = await run.collect()  # instead of drive: the sync answer (a collected
                                      # stream); raises the Failed event's error
    await run.close()               # idempotent; records the row if drive never ran
    run.cancel(reason)              # end it with `reason` (shutdown: ServiceUnavailable)

Events (adapters/events.py), in order: `Started`; `TextDelta` / `ToolCallDelta`
(core.model) as the answer arrives (with `together=True`, two or more pieces that one
upstream read completed come as one `Pieces`: never held across reads); then either
`Metered(usage)` and `Done(...)`, or `RunFailed(error)`. The ledger
row is written before `Done` / `Failed` is emitted, so a client that saw the end of an
answer has its row.

Rules:
- `open` failing: an unauthenticated caller gets no row (there is no key to bill); any
  other refusal (parse, rate limit, no route, a provider's check, the first grant's
  budget) is recorded, then raised. A budget refusal is thus a plain 402 on streaming
  surfaces too.
- One attempt loop performs every `core.attempts` action. A provider call is one
  call yielding the events of each upstream read: `stream_reads` of a provider that has
  it (`ReadsStreams`), else `Provider.stream`'s events one by one, for streamed
  requests; `Provider.complete` as one read (`whole_as_reads`) otherwise. Events before
  the first content (usage reports) are held back; the first text, tool-call piece or
  end is the first chunk, after which there is no fallback. Every event of a read is
  metered, in order, before the read's pieces are emitted, and a piece over the cap is
  neither emitted nor followed by any. `core.metering` counts and caps the output; each
  attempt's grant (`core.grants` through `Limits.grant`) is settled with the metered
  usage, or released when nothing was consumed.
- Cancellation: `run.cancel(reason)` ends the run with `reason` (the client sees a
  Failed event). A cancellation from outside (the client went away, a job's owner
  stopped it) closes the upstream call, settles what was consumed and records the row
  (`client_closed`, or `canceled` for an Ingress with `outside_cancel="canceled"`),
  then propagates.
- Providers may check a request before any call (`ChecksRequests.check_request`, e.g.
  the Mock's scenario); a refusal is recorded and raised by `open`.
- The database unreachable (`StorageUnavailable`, a 503): at admission it is raised by
  `open` like any refusal (fail closed: no budget, no call); during the run (a grant or
  a settle failed) the run ends Failed with it. A rate take, grant or settle the
  database refuses with its own error (any of `Storage.errors`, e.g. SQLite's file
  locked past the busy wait) is the same 503, logged on `umg.ledger`. A ledger row
  that cannot be written then, or that the database refuses (any of `Storage.errors`),
  is logged (`umg.ledger`, at error level, with request id, tenant, key id and cost)
  instead of raised: the client has its answer (the model call happened; a 500 would
  invite a retry billed again). A grant never used (the run never driven, the client
  gone before the first call) whose release fails costs no row either: the failure is
  logged (`umg.ledger`, warning) and the row written. A reservation whose settle or
  release failed stays held in its budget until `Limits` settles it when the database
  is back (adapters/limits.py), so the budget errs on the side of refusing meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping

from adapters import keys
from adapters.clock import Clock
from adapters.events import STARTED, Collector, Done, Emit, Metered, RunFailed
from adapters.execution import Execution
from adapters.health_book import HealthBook
from adapters.ingress import ChecksRequests, Ingress, new_id
from adapters.limits import Limits
from adapters.observe import Observer
from adapters.providers.base import Provider, Timeouts
from adapters.run_admission import open_run
from adapters.run_attempts import loop
from adapters.run_end import end, halted, stopped
from adapters.run_grants import refused_by_storage
from adapters.run_state import RunState
from adapters.runs import RunRegistry
from adapters.storage.base import Storage
from adapters.storage.records import KeyRecord
from core import attempts
from core.catalog import Catalog
from core.errors import AuthenticationFailed, StorageUnavailable
from core.model import Completion
from core.outcome import Failed, Happened


class Driver:
    def __init__(
        self,
        *,
        storage: Storage,
        catalog: Catalog,
        providers: Mapping[str, Provider],
        clock: Clock,
        health: HealthBook,
        limits: Limits,
        attempt_policy: attempts.AttemptPolicy,
        timeouts: Timeouts,
        runs: RunRegistry | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.storage = storage
        self.catalog = catalog
        self.providers = providers
        self.clock = clock
        self.health = health
        self.limits = limits
        self.policy = attempt_policy
        self.timeouts = timeouts
        self.runs = runs or RunRegistry()
        self.observer = observer
        # provider -> whether it checks requests (a runtime Protocol check is slow; asked
        # on every request): kept per provider object, so a replaced one is asked again
        self._checks: dict[str, tuple[Provider, ChecksRequests | None]] = {}
        self._reads: dict[str, tuple[Provider, bool]] = {}  # provider -> has stream_reads

    def checker(self, label: str) -> ChecksRequests | None:
        """The provider named `label` if it checks requests before a call, else None."""
        provider = self.providers.get(label)
        if provider is None:
            return None
        known = self._checks.get(label)
        if known is None or known[0] is not provider:
            known = (provider, provider if isinstance(provider, ChecksRequests) else None)
            self._checks[label] = known
        return known[1]

    def reads_streams(self, label: str, provider: Provider) -> bool:
        """Whether `provider` (named `label`) gives its streams read by read."""
        known = self._reads.get(label)
        if known is None or known[0] is not provider:
            known = (provider, callable(getattr(provider, "stream_reads", None)))
            self._reads[label] = known
        return known[1]

    async def authenticate(self, token: str | None) -> KeyRecord:
        prefix = keys.prefix_of(token) if token else None
        if token is None or prefix is None:
            raise AuthenticationFailed(
                "Missing or malformed API key: send 'Authorization: Bearer umg_live_...' "
                "or 'x-api-key: umg_live_...'"
            )
        record = await self.storage.key_by_prefix(prefix)
        if record is None or not keys.matches(token, record.secret_hash):
            raise AuthenticationFailed("Invalid API key")
        if record.revoked_at is not None:
            raise AuthenticationFailed("This API key has been revoked")
        return record

    def run(self, ingress: Ingress) -> Run:
        return Run(self, ingress)


class Run(RunState):
    """One request's run (see the module docstring for the API and the rules): its state
    (adapters/run_state.py) with the methods a surface calls, each a few lines handing
    the state to the module that owns the decision."""

    __slots__ = ()

    @property
    def execution(self) -> Execution | None:
        """The request's record; None until the body was parsed."""
        return self.exe_or_none

    def overhead_ms(self) -> float:
        """The gateway's time on this request so far (or until its row), in ms."""
        return self.stopwatch.overhead_ms(self.driver.clock.now())

    # authenticate, parse and admit; raises GatewayError (adapters/run_admission.py).
    # The function itself, not a method calling it: no call more per request
    open = open_run

    async def collect(self) -> Completion:
        collector = Collector()
        await self.drive(collector)
        return collector.completion(self.exe)

    async def drive(self, emit: Emit, *, together: bool = False) -> None:
        """`together`: the pieces one upstream read completed come as one `Pieces`."""
        happened: Happened | None = None
        self.together = together
        try:
            with self.scope:
                await emit(STARTED)
                try:
                    happened = await loop(self, emit)
                except StorageUnavailable as err:  # a grant or settle could not be made
                    happened = halted(self, err)
                except self.driver.storage.errors as err:  # the database refused one (SQLite)
                    happened = halted(self, refused_by_storage(self, err))
                if not self.scope.cancel_called:
                    # the row written in the run's own scope, shielded from here on (no
                    # checkpoint since the loop's last: nothing can have landed), and no
                    # longer cancelled by `cancel` (nothing is left to stop): one cancel
                    # scope less than a shielded one of its own (~48 k instructions)
                    self.ending = True
                    self.scope.shield = True
                    await end(self, happened, shielded=True)
            if happened is None:
                happened = stopped(self, outside=False)
        except BaseException:
            await end(self, happened or stopped(self, outside=True))
            raise
        await end(self, happened)  # at once if written above (`end` is idempotent)
        if isinstance(happened, Failed):
            await emit(RunFailed(happened.error))
        else:
            await emit(Metered(self.exe.answer_usage))
            await emit(Done(self.exe.finish_reason))

    async def close(self) -> None:
        """Record the row if it was not yet (a run opened but never driven)."""
        if self.exe_or_none is not None:
            await end(self, stopped(self, outside=True))


__all__ = ["ChecksRequests", "Driver", "Ingress", "Run", "new_id"]
