"""Idempotency keys: what a repeated request gets, and what is kept for the key.

Owns: the rule behind `Idempotency-Key` (as Stripe's API and the IETF httpapi draft use
it). Storage only makes `step` atomic on the (tenant, key) row; it decides nothing.

A key's record is absent, `running` (a request holds it, until `locked_until`) or `done`
(its answer is kept until `expires_at`). Events, and what each does (`TRANSITIONS`):

| record               | Arrive, same body      | Arrive, other body | Finish (holder)     |
|----------------------|------------------------|--------------------|---------------------|
| absent               | Claimed (now running)  | Claimed            | Lost (no change)    |
| running, held        | InProgress(retry_after)| Mismatch           | Kept / Released     |
| running, lapsed      | Claimed (taken over)   | Claimed            | Kept / Released     |
| done, kept           | Replay(answer)         | Mismatch           | Lost (no change)    |
| done, expired        | Claimed                | Claimed            | Lost (no change)    |

- "same body": equal `fingerprint` (`fingerprint(route, body)`: a hash of the route and
  the canonical form of the decoded JSON body, so key order, spacing and `1.10` vs `1.1`
  do not matter; `1` and `"1"` do).
- A claim holds for `policy.lock_seconds`: a holder that died (a crashed process) does
  not keep the key forever; after that a repeat runs again.
- `Finish(owner, answer, keep)`: only the holder's finish counts (one whose claim lapsed
  and was taken over is `Lost`). `keep` comes from `keeps(...)`: the answer is stored for
  `policy.ttl_seconds` when the request was billed or answered with success; otherwise
  the key is released (the record removed), so a retry can run: a refusal (4xx, 5xx
  before any output), or a stream that failed before any output billed, or an answer the
  client did not receive whole (it went away: the next try runs again).
- A replay never changes the record: the answer and its expiry stay as stored.

Times are epoch seconds from the caller (the one clock every process agrees on); a clock
going backwards only makes a claim or an answer last longer, never shorter than asked.

Invariants (tests/core/test_idempotency.py, stateful `KeyMachine`): at most one holder
at any time; a replay is always the answer finished under the same fingerprint; a
different body never replays; a kept answer does not change until it expires.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Literal, TypeAlias

from attrs import evolve, frozen

from core.errors import Conflict, InvalidRequest

MAX_KEY_LENGTH = 255


@frozen
class Policy:
    ttl_seconds: float = 86400.0  # how long a finished answer is replayed
    lock_seconds: float = 900.0  # how long a claim holds without a finish
    retry_after: float = 1.0  # what a 409 tells the client to wait (at most)

    def __attrs_post_init__(self) -> None:
        for name in ("ttl_seconds", "lock_seconds", "retry_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not value > 0:
                raise ValueError(f"idempotency.{name} must be a number > 0, not {value!r}")


@frozen
class Answer:
    """What the client got: the status, the route's own headers, and the body as sent
    (one chunk for JSON, one per frame for a stream)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    chunks: tuple[bytes, ...]
    request_id: str | None = None  # the gateway's id of the request that got it (None: not kept)


@frozen
class Record:
    fingerprint: str
    state: Literal["running", "done"]
    owner: str  # the claim of the request that holds (or held) the key
    locked_until: float  # running: the claim holds until then
    expires_at: float | None = None  # done: replayed until then
    answer: Answer | None = None

    def __attrs_post_init__(self) -> None:
        if (self.state == "done") != (self.answer is not None and self.expires_at is not None):
            raise ValueError("a done record has an answer and an expiry; a running one neither")


# -- events -----------------------------------------------------------------------------


@frozen
class Arrive:
    fingerprint: str
    owner: str  # a fresh claim id, drawn by the caller
    now: float


@frozen
class Finish:
    owner: str
    answer: Answer
    keep: bool
    now: float


Event: TypeAlias = Arrive | Finish


# -- decisions --------------------------------------------------------------------------


@frozen
class Claimed:
    owner: str


@frozen
class Replay:
    answer: Answer


@frozen
class InProgress:
    retry_after: float


@frozen
class Mismatch:
    pass


@frozen
class Kept:
    pass


@frozen
class Released:
    pass


@frozen
class Lost:
    pass


Decision: TypeAlias = Claimed | Replay | InProgress | Mismatch | Kept | Released | Lost
Step: TypeAlias = tuple[Record | None, Decision]


def phase(record: Record | None, now: float) -> str:
    """`absent`, `held`, `lapsed`, `kept` or `expired` (the rows of the table above)."""
    if record is None:
        return "absent"
    if record.state == "running":
        return "held" if now < record.locked_until else "lapsed"
    assert record.expires_at is not None
    return "kept" if now < record.expires_at else "expired"


def _claim(record: Record | None, event: Arrive, policy: Policy) -> Step:
    fresh = Record(event.fingerprint, "running", event.owner, event.now + policy.lock_seconds)
    return fresh, Claimed(event.owner)


def _held(record: Record | None, event: Arrive, policy: Policy) -> Step:
    assert record is not None
    if record.fingerprint != event.fingerprint:
        return record, Mismatch()
    wait = min(policy.retry_after, max(record.locked_until - event.now, 0.0))
    return record, InProgress(max(wait, 0.001))


def _kept(record: Record | None, event: Arrive, policy: Policy) -> Step:
    assert record is not None and record.answer is not None
    if record.fingerprint != event.fingerprint:
        return record, Mismatch()
    return record, Replay(record.answer)


def _finish(record: Record | None, event: Finish, policy: Policy) -> Step:
    if record is None or record.state != "running" or record.owner != event.owner:
        return record, Lost()
    if not event.keep:
        return None, Released()
    done = evolve(
        record, state="done", answer=event.answer, expires_at=event.now + policy.ttl_seconds
    )
    return done, Kept()


def _lost(record: Record | None, event: Finish, policy: Policy) -> Step:
    return record, Lost()


Handler: TypeAlias = Callable[[Record | None, "Event", Policy], Step]

TRANSITIONS: Mapping[tuple[str, type], Handler] = MappingProxyType(
    {
        ("absent", Arrive): _claim,  # type: ignore[dict-item]
        ("held", Arrive): _held,  # type: ignore[dict-item]
        ("lapsed", Arrive): _claim,  # type: ignore[dict-item]
        ("kept", Arrive): _kept,  # type: ignore[dict-item]
        ("expired", Arrive): _claim,  # type: ignore[dict-item]
        ("absent", Finish): _lost,  # type: ignore[dict-item]
        ("held", Finish): _finish,  # type: ignore[dict-item]
        ("lapsed", Finish): _finish,  # type: ignore[dict-item]
        ("kept", Finish): _lost,  # type: ignore[dict-item]
        ("expired", Finish): _lost,  # type: ignore[dict-item]
    }
)
PHASES = ("absent", "held", "lapsed", "kept", "expired")


def step(record: Record | None, event: Event, policy: Policy) -> Step:
    """The record after `event`, and what the request is told (see the table above).
    A `None` record means the row is deleted (or stays absent)."""
    return TRANSITIONS[(phase(record, event.now), type(event))](record, event, policy)


def keeps(status: int, complete: bool, billed: bool, failed: bool) -> bool:
    """Whether an answer is kept for its key: the client got it whole, and it was billed
    or a success (2xx, and the run, if any, did not fail)."""
    if not complete:
        return False
    return billed or (200 <= status < 300 and not failed)


# -- what the request says ---------------------------------------------------------------


class IdempotencyKeyReused(InvalidRequest):
    """The key was used with a different request body (or route)."""

    status = 422
    code = "idempotency_key_reused"


class IdempotencyKeyInUse(Conflict):
    """The first request with this key is still running."""

    code = "idempotency_key_in_use"


def error_of(decision: Decision) -> InvalidRequest | Conflict | None:
    """The client error a decision is answered with (None: run it or replay it)."""
    if isinstance(decision, Mismatch):
        return IdempotencyKeyReused(
            "This Idempotency-Key was already used with a different request body;"
            " use a new key for a new request",
            param="Idempotency-Key",
        )
    if isinstance(decision, InProgress):
        return IdempotencyKeyInUse(
            "A request with this Idempotency-Key is still being answered; retry after it ends",
            param="Idempotency-Key",
            retry_after=decision.retry_after,
        )
    return None


def check_key(key: str) -> str:
    """The key as given, or `InvalidRequest` naming the header: 1 to 255 visible ASCII
    characters (spaces allowed inside)."""
    if not 0 < len(key) <= MAX_KEY_LENGTH or not all(" " <= ch <= "~" for ch in key):
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters",
            param="Idempotency-Key",
        )
    if key != key.strip():
        raise InvalidRequest(
            "Idempotency-Key must not start or end with a space", param="Idempotency-Key"
        )
    return key


# -- the fingerprint ---------------------------------------------------------------------


def _number(value: int | Decimal) -> str:
    if isinstance(value, int):
        return str(value)
    if not value.is_finite():
        return str(value)
    return format(value.normalize(), "f")


def canonical(value: object) -> object:
    """`value` (decoded JSON: dict, list, str, int, Decimal, float, bool, None) as plain
    JSON whose encoding with sorted keys is the same for equal values: numbers are
    tagged decimal text (so 1, 1.0 and 1.00 agree, and none equals the string "1")."""
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | Decimal):
        return {"#": _number(value)}
    if isinstance(value, float):
        return {"#": _number(Decimal(repr(value)))}
    raise TypeError(f"not a decoded JSON value: {type(value).__name__}")


def fingerprint(route: str, body: object) -> str:
    """A hash of the route and the canonical body (hex SHA-256)."""
    text = json.dumps([route, canonical(body)], sort_keys=True, ensure_ascii=True,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).hexdigest()
