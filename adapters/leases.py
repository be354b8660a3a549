"""Slices of a key's shared rate buckets held by this process (for storage shared by many
processes: Postgres), so most admissions need no database round trip.

Owns: when a process admits a request from its own slice and when it goes to the shared
row, and giving back what a slice did not use. The slice size is `core.lease`'s rule.

Rules:
- A slice is taken from the shared buckets (`rl:<key id>`) in ONE `update_state`, with
  `core.ratelimit.take_all` on needs scaled by `k = core.lease.slice_units(...)`, the
  smallest over the key's buckets: `k` requests' worth of requests AND of this request's
  tokens, all or nothing. The request that leased it is admitted from it; the next
  `k - 1` requests that fit what is left are admitted locally.
- Exact: the shared row never gives out more than it has, so the slices of all
  processes never sum to more than the buckets allow, and admitted <= limit holds
  across processes exactly as without slices. As a bucket runs low, `k` falls to 1: a
  per-request take, the same transaction, refusal and headers as without slices (small
  limits, such as rpm 4, never lease more than one request).
- Given back: a slice is used for at most `hold_seconds` (1 s). The next lease after
  that, or when the slice cannot fit a request, first gives back what is left of the
  old slice (`ratelimit.adjust` with the negative remainder, capped at capacity), in
  the same transaction. Token corrections after a call (`adjust`) go to the slice when
  the process holds one (a debt is given back with it), else to the shared row. While
  a lease gives a slice back, corrections still go to that slice: what they charge
  after the lease read it is carried into the fresh slice (a debt in it), or, when the
  lease holds no slice, sent to the row in one update then. (Before, each such
  correction was a transaction of its own on the row, 4 to 5 per lease at c=64.)
- Headers on a local admission: the shared level as of the lease plus what is left in
  the slice (refill since the lease is not counted; the shared row is authoritative).
- Single-flight: a miss while a lease of the same scope is in flight in this process
  waits for it and tries the slice again; it leases itself only when that lease did
  not cover it (then again behind the next one in flight, if any, else as the next).
  So a burst of first requests makes one lease, not one each. Waiting ends when the
  lease ends, whatever its outcome (the leaser sets it in a `finally`, and its
  transaction is shielded), so cancelling the leaser strands no waiter; a waiter's own
  cancellation only stops its wait.
- Near the limit (the scope's last lease held no slice: `k` was 1 or it was refused,
  less than `hold_seconds` ago) misses do not wait: each takes per request at once,
  concurrently, as without single-flight, so per-request takes never queue behind each
  other in the process (after `hold_seconds` without such a lease, misses wait again:
  a row that refilled meanwhile is not leased once per waiting request). A
  lease that ended without a slice (refused, per request, or failed) also sends its
  waiters to lease at once rather than one after another.
- A lease interrupted by cancellation is shielded (it is one short transaction).
"""

from __future__ import annotations

from typing import Any

import trio
from attrs import define

from adapters.clock import Clock
from adapters.storage.base import Storage
from core import ratelimit
from core.lease import LeasePolicy, slice_units

HOLD_SECONDS = 1.0


@define
class _Slice:
    left: dict[str, float]  # kind -> amount still admittable here (negative: a debt)
    shared: dict[str, float]  # kind -> the shared level right after the lease
    reset: dict[str, float]
    expires: float  # Clock.now()


@define
class _Return:
    """A slice being given back by a lease in flight: corrections still charge it."""

    held: _Slice
    given: dict[str, float]  # kind -> what the lease gave back (its `left` when read)


@define
class _Flight:
    done: trio.Event
    sliced: bool = False  # it ended holding a slice: a waiter not covered waits again


def _spec(need: ratelimit.Need) -> ratelimit.BucketSpec:
    return ratelimit.BucketSpec.per_minute(need.per_minute)


def _fits(held: _Slice, needs: tuple[ratelimit.Need, ...]) -> bool:
    return all(held.left.get(n.kind, 0.0) >= n.amount for n in needs)


class RateSlices:
    def __init__(
        self,
        storage: Storage,
        clock: Clock,
        policy: LeasePolicy | None = None,
        hold_seconds: float = HOLD_SECONDS,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._policy = policy or LeasePolicy()
        self._hold = hold_seconds
        self._slices: dict[str, _Slice] = {}
        self._flights: dict[str, _Flight] = {}  # scope -> the lease in flight here
        self._returning: dict[str, _Return] = {}  # scope -> the slice a lease in flight gives back
        # scope -> until when (Clock.now()) its misses lease at once: its last lease held no slice
        self._per_request: dict[str, float] = {}
        self.leases = 0  # transactions made (for tests and benchmarks)

    async def take(
        self, scope: str, needs: tuple[ratelimit.Need, ...], now: float
    ) -> ratelimit.Admission:
        local = self._local(scope, needs)
        if local is not None:
            return local
        while self._waits(scope) and (flight := self._flights.get(scope)) is not None:
            await flight.done.wait()
            local = self._local(scope, needs)
            if local is not None:
                return local
            if not flight.sliced:
                break
        mine = None  # the flight this take leads, if none is in flight already
        if scope not in self._flights:
            mine = self._flights[scope] = _Flight(trio.Event())
        fresh: _Slice | None = None
        old = self._slices.pop(scope, None)  # given back by this lease, by no other
        back = None if old is None else _Return(old, dict(old.left))
        if back is not None:
            self._returning[scope] = back  # corrections meanwhile still charge it
        try:
            with trio.CancelScope(shield=True):
                admission, fresh = await self._lease(scope, needs, now, back)
        finally:
            if back is not None and self._returning.get(scope) is back:
                del self._returning[scope]
            if mine is not None:
                mine.sliced = fresh is not None
                del self._flights[scope]
                mine.done.set()
        late = {} if back is None else {k: v - back.given[k] for k, v in back.held.left.items() if v != back.given[k]}
        if fresh is not None:
            for kind, amount in late.items():
                if kind in fresh.left:  # a limit since removed: nothing to do
                    fresh.left[kind] += amount
            self._keep(scope, fresh)
            self._per_request.pop(scope, None)
        else:
            self._per_request[scope] = self._clock.now() + self._hold
            if late:
                with trio.CancelScope(shield=True):
                    await self._charge(scope, needs, late)
        if isinstance(admission, ratelimit.Refusal):
            # the row is empty, but leases of this process's other requests made while
            # this one waited may hold room for it: never refuse what is held here
            return self._local(scope, needs) or admission
        return admission

    def _waits(self, scope: str) -> bool:
        """Whether a miss on `scope` waits for a lease in flight (not near the limit)."""
        until = self._per_request.get(scope)
        if until is None:
            return True
        if self._clock.now() < until:
            return False
        del self._per_request[scope]
        return True

    def _local(self, scope: str, needs: tuple[ratelimit.Need, ...]) -> ratelimit.Admitted | None:
        held = self._slices.get(scope)
        if held is None or self._clock.now() >= held.expires or not _fits(held, needs):
            return None
        said: dict[str, str] = {}
        for need in needs:
            held.left[need.kind] -= need.amount
            level = held.shared[need.kind] + held.left[need.kind]
            allowed = ratelimit.Allowed(level, held.reset[need.kind])
            said.update(ratelimit.headers(need.kind, _spec(need), allowed))
        return ratelimit.Admitted(said)

    def held(self, scope: str, kind: str) -> float:
        """What the slice for `scope` still holds of `kind` (0 without a slice)."""
        current = self._slices.get(scope)
        return 0.0 if current is None else current.left.get(kind, 0.0)

    def adjust(self, scope: str, kind: str, delta: float) -> bool:
        """Charge `delta` more of `kind` to the slice held for `scope` (or being given
        back by a lease in flight); False if none."""
        held = self._slices.get(scope)
        if held is None and (back := self._returning.get(scope)) is not None:
            held = back.held
        if held is None or kind not in held.left:
            return False
        held.left[kind] -= delta
        return True

    def _keep(self, scope: str, fresh: _Slice) -> None:
        current = self._slices.get(scope)
        if current is not None:  # two leases raced in this process: keep both remainders
            for kind, amount in current.left.items():
                fresh.left[kind] = fresh.left.get(kind, 0.0) + amount
        self._slices[scope] = fresh

    async def _charge(self, scope: str, needs: tuple[ratelimit.Need, ...], late: dict[str, float]) -> None:
        """What corrections charged a slice after its lease gave it back (`late`: kind ->
        the change of its `left`), charged to the shared row, one update."""
        specs: dict[str, ratelimit.BucketSpec] = {need.kind: _spec(need) for need in needs}
        now = self._clock.epoch()

        def apply(state: dict[str, Any] | None) -> tuple[None, dict[str, Any]]:
            buckets = ratelimit.buckets_from_dict(state)
            for kind, left in late.items():
                spec = specs.get(kind)
                if spec is not None:  # a limit since removed: nothing to do
                    buckets[kind] = ratelimit.adjust(spec, buckets.get(kind), -left, now)
            return None, ratelimit.buckets_to_dict(buckets)

        await self._storage.update_state(scope, apply)

    async def _lease(
        self,
        scope: str,
        needs: tuple[ratelimit.Need, ...],
        now: float,
        back: _Return | None,
    ) -> tuple[ratelimit.Admission, _Slice | None]:
        policy = self._policy
        specs: dict[str, ratelimit.BucketSpec] = {need.kind: _spec(need) for need in needs}

        def apply(state: dict[str, Any] | None) -> tuple[tuple[ratelimit.Admission, _Slice | None], dict[str, Any]]:
            buckets = ratelimit.buckets_from_dict(state)
            if back is not None:  # what is left of it now is what this lease gives back
                back.given = dict(back.held.left)
            for kind, left in (back.given.items() if back is not None else ()):
                spec = specs.get(kind)
                if spec is not None and left != 0.0:  # a limit since removed: nothing to do
                    buckets[kind] = ratelimit.adjust(spec, buckets.get(kind), -left, now)
            k = min(
                slice_units(
                    ratelimit.refill(specs[n.kind], buckets.get(n.kind), now).level,
                    max(n.amount, 1.0),
                    policy,
                )
                for n in needs
            )
            k = max(k, 1)  # nothing to lease: take as one request, refused as it would be
            scaled = tuple(ratelimit.Need(n.kind, n.per_minute, n.amount * k) for n in needs)
            admission, after = ratelimit.take_all(scaled, buckets, now)
            fresh = None
            if k > 1 and isinstance(admission, ratelimit.Admitted):
                fresh = _Slice(
                    left={n.kind: n.amount * (k - 1) for n in needs},
                    shared={n.kind: after[n.kind].level for n in needs},
                    reset={n.kind: (specs[n.kind].capacity - after[n.kind].level) / specs[n.kind].per_second for n in needs},
                    expires=self._clock.now() + self._hold,
                )
                admission = ratelimit.Admitted(
                    {
                        key: value
                        for n in needs
                        for key, value in ratelimit.headers(
                            n.kind,
                            specs[n.kind],
                            ratelimit.Allowed(fresh.shared[n.kind] + fresh.left[n.kind], fresh.reset[n.kind]),
                        ).items()
                    }
                )
            return (admission, fresh), ratelimit.buckets_to_dict(after)

        self.leases += 1
        return await self._storage.update_state(scope, apply)
