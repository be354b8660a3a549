"""The request driver: ONE path from a caller's key to one ledger row, for every surface.

Owns: the whole lifecycle of one model request, whichever surface it came from (sync
JSON, SSE, WebSocket, jobs): authenticate, parse, admit (rate limits, routing, provider
checks, the first budget grant), the attempt loop, settling, exactly one ledger row, and
the final status (`core.outcome`). Surfaces only frame the neutral events it emits; it
knows nothing of Quart, HTTP or wire formats, so it can be called from any ASGI layer.

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

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Literal, Protocol, cast, runtime_checkable

import trio
from attrs import evolve, frozen

from adapters import keys, watching
from adapters.clock import Clock
from adapters.events import (
    STARTED,
    CallEvent,
    Collector,
    Done,
    Emit,
    Metered,
    Pieces,
    RunFailed,
    Upstream,
    whole_as_reads,
)
from adapters.execution import Execution, ledger_row
from adapters.health_book import HealthBook
from adapters.limits import Grant, Limits
from adapters.observe import Observer, RunWatch
from adapters.providers.base import Provider, ProviderError, ReadsStreams, Timeouts
from adapters.runs import RunRegistry
from adapters.stopwatch import Stopwatch
from adapters.storage.base import Storage
from adapters.storage.records import KeyRecord, UsageRecord
from core import attempts, grants, metering, routing
from core.billing import cost
from core.catalog import Catalog, Deployment
from core.errors import AuthenticationFailed, ClientClosed, GatewayError, StorageUnavailable
from core.model import (
    Completion,
    FailureKind,
    FinishReason,
    GatewayRequest,
    StreamEnd,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageReport,
)
from core.outcome import Answered, Canceled, Failed, Happened, outcome
from core.tokens import estimate_request_tokens

ledger_log = logging.getLogger("umg.ledger")


# what `_relay` tells apart per event, as tuples (`A | B` in `isinstance` builds a union
# object at every call)
_PIECES = (TextDelta, ToolCallDelta)
_NOTES = (UsageReport, Upstream)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# ---- what goes in -------------------------------------------------------------------


@frozen
class Ingress:
    """One request as it reached the gateway: plain values, no framework objects.

    `parse` reads the body into a request (it raises GatewayError for bad input; it runs
    after authentication, so an authenticated caller's bad request is recorded). Give
    `key` when the caller is known already (jobs, an open WebSocket), else `token`.
    `tracked`: the run is in the shutdown registry (jobs are not: their lease survives).
    `watch`: told the request's record once its ledger row is written (what it cost, how
    it ended), e.g. by the idempotency layer deciding whether the answer is kept.
    For observers (adapters/observe.py): `client_request_id`, the id the client sees
    (default: `request_id`); `trace_headers`, the incoming `traceparent` / `tracestate`;
    `stopwatch`, started when the request reached the gateway (default: by `open`), which
    the run keeps (adapters/stopwatch.py: the gateway's overhead).
    """

    request_id: str
    endpoint: str
    parse: Callable[[], Awaitable[GatewayRequest]]
    token: str | None = None
    key: KeyRecord | None = None
    outside_cancel: Literal["client_gone", "canceled"] = "client_gone"
    tracked: bool = True
    watch: Callable[[Execution], None] | None = None
    client_request_id: str | None = None
    trace_headers: Mapping[str, str] = MappingProxyType({})
    stopwatch: Stopwatch | None = None


@runtime_checkable
class ChecksRequests(Protocol):
    """A provider that refuses some requests before any call (a 4xx, recorded)."""

    def check_request(self, request: GatewayRequest) -> None: ...


# ---- the driver ---------------------------------------------------------------------


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


class Run:
    """One request's run (see the module docstring for the API and the rules)."""

    def __init__(self, driver: Driver, ingress: Ingress) -> None:
        self._d = driver
        self.ingress = ingress
        self.request_id = ingress.request_id
        self._exe: Execution | None = None
        self._scope = trio.CancelScope()  # cancelled by `cancel(reason)`
        self._cut: GatewayError | None = None
        self._actions: tuple[attempts.Action, ...] = ()
        self._grant: Grant | None = None  # the open grant of the attempt under way
        self._grant_attempt = 0
        self._meter = metering.Meter(0)
        self._recorded = False
        self.stopwatch = ingress.stopwatch or Stopwatch(driver.clock.now())
        self._watch: RunWatch | None = None  # this run's observers (adapters/observe.py)
        self._watched: attempts.CallProvider | None = None  # the attempt they were told of
        self._together = False  # drive(together=True): a read's pieces as one Pieces

    @property
    def execution(self) -> Execution | None:
        """The request's record; None until the body was parsed."""
        return self._exe

    @property
    def exe(self) -> Execution:
        assert self._exe is not None, "the run is not open"
        return self._exe

    def overhead_ms(self) -> float:
        """The gateway's time on this request so far (or until its row), in ms."""
        return self.stopwatch.overhead_ms(self._d.clock.now())

    def _client_id(self) -> str | None:
        """The client's own x-request-id for the ledger row (None: it sent none)."""
        shown = self.ingress.client_request_id
        return shown if shown is not None and shown != self.request_id else None

    # -- admission --------------------------------------------------------------------

    async def open(self) -> Execution:
        d, ingress = self._d, self.ingress
        try:
            key = ingress.key or await d.authenticate(ingress.token)
        except AuthenticationFailed as err:
            if d.observer is not None:
                d.observer.refused(watching.refused(ingress, err, d.clock.now()))
            raise
        started = d.clock.now()
        try:
            request = await ingress.parse()
        except GatewayError as err:
            self._exe = Execution(
                self.request_id, key, GatewayRequest(model="", messages=()), ingress.endpoint, started
            )
            self._watch_opened(self._exe)
            await self._end(Failed(err))
            raise
        self._exe = exe = Execution(self.request_id, key, request, ingress.endpoint, started)
        self._watch_opened(exe)
        if ingress.tracked:
            d.runs.add(self)
        try:
            await self._admit(exe)
        except GatewayError as err:
            await self._end(Failed(err))
            raise
        except d.storage.errors as err:  # the database refused a rate take or grant (SQLite)
            refused = self._refused_by_storage(err)
            await self._end(Failed(refused))
            raise refused from err
        except BaseException:
            await self._end(self._stopped(outside=True))
            raise
        return exe

    def _watch_opened(self, exe: Execution) -> None:
        if self._d.observer is not None:
            self._watch = self._d.observer.run_opened(watching.opened(self.ingress, exe))

    async def _admit(self, exe: Execution) -> None:
        d, request = self._d, exe.request
        exe.input_estimate = estimate_request_tokens(request)
        charged = metering.charged_tokens(exe.input_estimate, request.max_output_tokens)
        exe.rate_headers = await d.limits.take_rate(exe.key, charged)
        exe.plan = routing.plan(
            request,
            d.catalog,
            d.health.snapshot(),
            now=d.clock.now(),
            draw=secrets.randbelow(1 << 30) / (1 << 30),
            input_tokens=exe.input_estimate,
            policy=d.health.policy,
        )
        for label in dict.fromkeys(dep.provider for dep in exe.plan.deployments):
            checker = d.checker(label)
            if checker is not None:
                checker.check_request(request)
        exe.attempts, self._actions = attempts.start(exe.plan.deployments, d.policy, d.clock.now())
        first = self._actions[0]
        if isinstance(first, attempts.Fail):
            raise first.error
        if isinstance(first, attempts.CallProvider):
            await self._take_grant(first)  # before the first byte: a refusal is a 402

    async def _take_grant(self, action: attempts.CallProvider) -> Grant:
        exe, dep = self.exe, action.deployment
        ask = grants.Ask(
            rid=grants.rid(exe.request_id, action.attempt),
            price=dep.price,
            input_tokens=exe.input_estimate,
            wanted=grants.wanted_output(exe.request.max_output_tokens, dep.max_output_tokens),
            capped=exe.request.max_output_tokens is not None,
            request_remaining=grants.request_remaining(exe.request.max_cost_usd, exe.cost),
        )
        self._grant = await self._d.limits.grant(exe.key, ask)
        self._grant_attempt = action.attempt
        return self._grant

    # -- running ----------------------------------------------------------------------

    def cancel(self, reason: GatewayError) -> None:
        if self._cut is None:
            self._cut = reason
        self._scope.cancel()

    async def collect(self) -> Completion:
        collector = Collector()
        await self.drive(collector)
        return collector.completion(self.exe)

    async def drive(self, emit: Emit, *, together: bool = False) -> None:
        """`together`: the pieces one upstream read completed come as one `Pieces`."""
        happened: Happened | None = None
        self._together = together
        try:
            with self._scope:
                await emit(STARTED)
                try:
                    happened = await self._loop(emit)
                except StorageUnavailable as err:  # a grant or settle could not be made
                    happened = self._halted(err)
                except self._d.storage.errors as err:  # the database refused one (SQLite)
                    happened = self._halted(self._refused_by_storage(err))
            if happened is None:
                happened = self._stopped(outside=False)
        except BaseException:
            await self._end(happened or self._stopped(outside=True))
            raise
        await self._end(happened)
        if isinstance(happened, Failed):
            await emit(RunFailed(happened.error))
        else:
            await emit(Metered(self.exe.answer_usage))
            await emit(Done(self.exe.finish_reason))

    def _halted(self, error: GatewayError) -> Failed:
        """The run failed with `error`, the gateway's own (a grant or settle not made): the
        attempt being made, if any, ends as "halted" (`attempts.Halted`), not "in_flight"."""
        exe = self._exe
        if exe is not None and exe.attempts is not None and not exe.attempts.done:
            self._step(attempts.Halted(error))  # its one action is this Failed
        return Failed(error)

    def _refused_by_storage(self, err: Exception) -> StorageUnavailable:
        """A rate take, grant or settle the database refused with its own error, as the
        503 the client gets (the database's words only in the log)."""
        ledger_log.warning("limits of request_id=%s not updated, the database refused: %s: %s",
                           self.request_id, type(err).__name__, err)
        return StorageUnavailable("The gateway's database refused this request's limits update;"
                                  " try again shortly")

    async def close(self) -> None:
        """Record the row if it was not yet (a run opened but never driven)."""
        if self._exe is not None:
            await self._end(self._stopped(outside=True))

    def _step(self, event: attempts.Event) -> tuple[attempts.Action, ...]:
        exe = self.exe
        assert exe.attempts is not None
        exe.attempts, actions = attempts.step(exe.attempts, event, self._d.clock.now())
        return actions

    def _stopped(self, *, outside: bool) -> Happened:
        """How a run that did not finish on its own ended (cut, client gone, canceled)."""
        exe = self._exe
        error: GatewayError = ClientClosed("The client closed the request before the answer ended")
        if exe is not None and exe.attempts is not None and not exe.attempts.done:
            for action in self._step(attempts.ClientGone()):
                if isinstance(action, attempts.Fail):
                    error = action.error
        if not outside and self._cut is not None:
            return Failed(self._cut)
        if outside and self.ingress.outside_cancel == "canceled":
            return Canceled()
        return Failed(error)

    async def _loop(self, emit: Emit) -> Happened:
        actions = self._actions
        while True:
            event: attempts.Event | None = None
            for action in actions:
                if isinstance(action, attempts.CallProvider):
                    event = await self._attempt(action, emit)
                elif isinstance(action, attempts.SleepUntil):
                    slept = self._d.clock.now()
                    await trio.sleep_until(action.at)
                    self.stopwatch.waited += self._d.clock.now() - slept
                    event = attempts.Woke()
                elif isinstance(action, attempts.Finish):
                    return Answered()
                elif isinstance(action, attempts.Fail):
                    return Failed(action.error)
            assert event is not None, "the attempt machine produced no action to act on"
            actions = self._step(event)
            if self._watch is not None and self._watched is not None:
                self._watch.attempt_ended(watching.attempt_ended(self._watched, event, actions, self.exe, self._d.clock.now()))
                self._watched = None

    def _calls(self, dep: Deployment, request: GatewayRequest) -> AsyncIterator[Sequence[CallEvent]]:
        """The provider call as the events of each upstream read (each list non-empty)."""
        provider = self._d.providers.get(dep.provider)
        if provider is None:
            raise ProviderError(FailureKind.CONNECT, f"no provider configured for '{dep.provider}'")
        if not request.stream:
            return whole_as_reads(provider, dep, request, self._d.timeouts)
        if self._d.reads_streams(dep.provider, provider):
            return cast(ReadsStreams, provider).stream_reads(dep, request, timeouts=self._d.timeouts)
        return _one_by_one(provider.stream(dep, request, timeouts=self._d.timeouts))

    async def _next_read(self, calls: AsyncIterator[Sequence[CallEvent]]) -> Sequence[CallEvent] | None:
        """The events of the next upstream read; None at the end (the wait is the stopwatch's)."""
        clock = self._d.clock
        waiting = clock.now()
        try:
            return await calls.__anext__()
        except StopAsyncIteration:
            return None
        finally:
            self.stopwatch.waited += clock.now() - waiting

    def _absorb(self, read: Sequence[CallEvent], at: int) -> int:
        """Meter the usage reports and note the upstream's ids from `read[at:]` up to its
        first content (a piece or the end); where that is (len(read): none)."""
        for i in range(at, len(read)):
            item = read[i]
            if not isinstance(item, _NOTES):
                return i
            self._note(item)
        return len(read)

    def _note(self, item: UsageReport | Upstream) -> None:
        """An event that is not content: a usage report metered, the upstream's ids noted."""
        if isinstance(item, UsageReport):
            self._meter = metering.observe(self._meter, item)
        else:
            self.exe.upstream_model, self.exe.upstream_id = item.model, item.id

    async def _relay(self, read: Sequence[CallEvent], at: int, emit: Emit) -> FinishReason | None:
        """Meter `read[at:]` and emit its pieces (one `Pieces` when together), up to its
        end or the first piece over the cap (not emitted); the finish reason if either."""
        pieces: list[TextDelta | ToolCallDelta] = []
        end: FinishReason | None = None
        observe, over_cap = metering.observe, metering.over_cap  # once per read, not per piece
        for i in range(at, len(read)):
            item = read[i]
            if isinstance(item, _PIECES):
                self._meter = meter = observe(self._meter, item)
                if over_cap(meter):
                    end = "length"
                    break
                pieces.append(item)
            elif isinstance(item, StreamEnd):
                end = item.finish_reason
                break
            elif isinstance(item, _NOTES):
                self._note(item)
        if len(pieces) == 1:
            await emit(pieces[0])
        elif pieces and self._together:
            await emit(Pieces(tuple(pieces)))
        else:
            for piece in pieces:
                await emit(piece)
        return end

    async def _attempt(self, action: attempts.CallProvider, emit: Emit) -> attempts.Event:
        exe, dep = self.exe, action.deployment
        exe.deployment = dep
        grant = self._grant if self._grant_attempt == action.attempt and self._grant else None
        grant = grant or await self._take_grant(action)
        request = exe.request
        if grant.max_output_tokens is not None:
            request = evolve(request, max_output_tokens=grant.max_output_tokens)
        self._meter = metering.Meter(exe.input_estimate, grant.max_output_tokens, not request.stream)
        started = self._d.clock.now()
        self._d.health.begin_attempt(dep.id, started)
        if self._watch is not None:
            self._watched = action
            provider = self._d.providers.get(dep.provider)
            self._watch.attempt_started(watching.attempt_started(action, provider, started))
        failure: ProviderError | None = None
        calls: AsyncIterator[Sequence[CallEvent]] | None = None
        try:
            calls = self._calls(dep, request)
            at = 0
            with trio.fail_at(action.deadline):  # until the first content
                read = await self._next_read(calls)
                while read is not None and (at := self._absorb(read, 0)) == len(read):
                    read = await self._next_read(calls)
            if request.stream:
                exe.ttft = self._d.clock.now() - exe.started
            if read is not None:
                # the first chunk: no fallback from here on (the machine asks for nothing)
                asked = self._step(attempts.FirstChunk())
                assert not asked, asked
                if self._watch is not None:
                    self._watch.first_chunk(watching.first_chunk(action, exe, self._d.clock.now()))
            while read is not None:
                end = await self._relay(read, at, emit)
                if end is not None:
                    return await self._answered(dep, started, end)
                read = await self._next_read(calls)
                at = 0
            failure = ProviderError(FailureKind.STREAM_CUT, "the provider's stream ended without an end event")
        except ProviderError as err:
            failure = err
        except trio.TooSlowError:
            failure = ProviderError(FailureKind.TIMEOUT, "no answer before the attempt deadline")
        finally:
            with trio.CancelScope(shield=True):
                if calls is not None:
                    await calls.aclose()  # type: ignore[attr-defined]
                await self._settle(metering.consumed(self._meter))
        assert failure is not None
        self._observe(dep, started, failure)
        return attempts.AttemptFailed(failure.kind, failure.retry_after, failure.message)

    async def _answered(self, dep: Deployment, started: float, reason: FinishReason) -> attempts.Event:
        usage = metering.consumed(self._meter) or Usage(input_tokens=self.exe.input_estimate)
        self._observe(dep, started, None)
        self.exe.finish_reason = reason
        await self._settle(usage)
        return attempts.Completed(usage)

    def _observe(self, dep: Deployment, started: float, error: ProviderError | None) -> None:
        now = self._d.clock.now()
        self._d.health.observe(dep.id, error is None, now - started, error.kind if error else None, now)

    async def _settle(self, usage: Usage | None) -> None:
        """Settle the open grant with `usage` (release it when nothing was consumed)."""
        grant, self._grant = self._grant, None
        if grant is None:
            return
        exe, limits = self.exe, self._d.limits
        rid = grants.rid(exe.request_id, self._grant_attempt)
        if usage is None or exe.deployment is None:
            await limits.release(grant, rid)
            return
        spent = cost(usage, exe.deployment.price)
        exe.usage = exe.usage + usage
        exe.answer_usage = usage
        exe.cost += spent
        exe.price_version = exe.deployment.price.version
        if self._watch is not None:
            self._watch.metered(watching.metered(self._grant_attempt, usage, spent))
        await limits.settle(grant, rid, spent)

    # -- the ledger -------------------------------------------------------------------

    async def _end(self, happened: Happened) -> None:
        """Write this run's one ledger row (idempotent; shielded from cancellation)."""
        if self._recorded:
            return
        self._recorded = True
        exe, d = self.exe, self._d
        with trio.CancelScope(shield=True):
            await self._release_unused()
            try:
                exe.outcome = outcome(happened)
                self.stopwatch.ended = ended = d.clock.now()
                exe.overhead_ms = self.stopwatch.overhead_ms(ended)
                row = ledger_row(exe, new_id("use"), d.clock.wall(), ended, self._client_id())
                # alone: no other run is open, so no batch could form (group_commit.py)
                await d.storage.insert_usage(row, alone=len(d.runs) <= 1)
            except d.storage.errors as err:  # away, or the row refused: logged for re-entry
                d.runs.discard(self)
                why = "database unreachable" if isinstance(err, StorageUnavailable) else "refused"
                ledger_log.error(
                    "ledger row not written (%s): request_id=%s tenant=%s key_id=%s cost_usd=%s"
                    " status=%s: %s: %s", why, exe.request_id, exe.key.tenant, exe.key.id,
                    exe.cost, exe.outcome.status if exe.outcome else None, type(err).__name__, err,
                )
                return
            try:
                if self.ingress.watch is not None:
                    self.ingress.watch(exe)
                if self._watch is not None:
                    self._watch_finished(row, happened, d.clock.now() - ended)
                if exe.plan is not None:
                    charged = metering.charged_tokens(exe.input_estimate, exe.request.max_output_tokens)
                    await d.limits.adjust_tokens(exe.key, metering.tokens_correction(charged, exe.usage))
            except StorageUnavailable as err:  # the row is in; only the bucket is off
                ledger_log.warning(
                    "tokens-per-minute bucket not corrected after the row of request_id=%s"
                    " (database unreachable): %s", exe.request_id, err,
                )
            finally:
                d.runs.discard(self)

    async def _release_unused(self) -> None:
        """Release a grant taken but never used. Its failure costs no ledger row: it is
        logged, and `Limits` keeps the reservation until the database is back."""
        try:
            await self._settle(None)
        except self._d.storage.errors + (StorageUnavailable,) as err:
            ledger_log.warning(
                "reservation of request_id=%s not released (database unreachable), kept"
                " until it is back: %s: %s", self.exe.request_id, type(err).__name__, err,
            )

    def _watch_finished(self, row: UsageRecord, happened: Happened, ledger_seconds: float) -> None:
        assert self._watch is not None
        now = self._d.clock.now()
        if self._watched is not None:  # cut inside an attempt (client gone, shutdown)
            self._watch.attempt_ended(watching.attempt_cut(self._watched, now))
            self._watched = None
        error = happened.error if isinstance(happened, Failed) else None
        self._watch.run_finished(
            watching.finished(self.exe, row, error, self.overhead_ms(), ledger_seconds, now)
        )


async def _one_by_one(events: AsyncIterator[CallEvent]) -> AsyncIterator[Sequence[CallEvent]]:
    """A provider's stream without reads of its own: each event its own read."""
    try:
        async for event in events:
            yield [event]
    finally:
        await events.aclose()  # type: ignore[attr-defined]


__all__ = ["ChecksRequests", "Driver", "Ingress", "Run", "new_id"]
