"""Idempotency keys: repeat, conflict, in progress, expiry, and the canonical fingerprint.

Invariants (stateful `KeyMachine`, checked after every step): at most one request holds
a key at a time; a replay is always the answer kept under the same fingerprint; a
different body never replays; a kept answer does not change until it expires.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from core import idempotency as idem
from core.idempotency import (
    Answer,
    Arrive,
    Claimed,
    Finish,
    InProgress,
    Kept,
    Lost,
    Mismatch,
    Policy,
    Released,
    Replay,
    step,
)

POLICY = Policy(ttl_seconds=100.0, lock_seconds=10.0, retry_after=1.0)
OK = Answer(200, (("content-type", "application/json"),), (b'{"id":"x"}',))


def claimed(fp: str = "a", owner: str = "o1", now: float = 0.0) -> idem.Record:
    record, decision = step(None, Arrive(fp, owner, now), POLICY)
    assert decision == Claimed(owner) and record is not None
    return record


def done(fp: str = "a", now: float = 1.0) -> idem.Record:
    record, decision = step(claimed(fp), Finish("o1", OK, True, now), POLICY)
    assert decision == Kept() and record is not None
    return record


def test_first_arrival_claims_and_a_repeat_while_running_is_in_progress() -> None:
    record = claimed()
    assert record.state == "running" and record.locked_until == 10.0
    same, decision = step(record, Arrive("a", "o2", 5.0), POLICY)
    assert same is record and decision == InProgress(1.0)
    _, near_end = step(record, Arrive("a", "o2", 9.75), POLICY)
    assert near_end == InProgress(0.25)  # never longer than the claim has left


def test_a_different_body_is_a_mismatch_while_running_and_once_done() -> None:
    assert step(claimed(), Arrive("b", "o2", 1.0), POLICY)[1] == Mismatch()
    assert step(done(), Arrive("b", "o2", 2.0), POLICY)[1] == Mismatch()


def test_a_repeat_after_the_finish_replays_without_changing_the_record() -> None:
    record = done()
    assert record.expires_at == 101.0
    again, decision = step(record, Arrive("a", "o2", 50.0), POLICY)
    assert decision == Replay(OK) and again is record


def test_an_expired_answer_or_a_lapsed_claim_is_claimed_again() -> None:
    fresh, decision = step(done(), Arrive("b", "o2", 101.0), POLICY)
    assert decision == Claimed("o2") and fresh is not None and fresh.fingerprint == "b"
    taken, decision = step(claimed(), Arrive("a", "o2", 10.0), POLICY)
    assert decision == Claimed("o2") and taken is not None and taken.owner == "o2"
    # the old holder's finish no longer counts
    assert step(taken, Finish("o1", OK, True, 11.0), POLICY) == (taken, Lost())


def test_a_finish_not_kept_releases_the_key() -> None:
    assert step(claimed(), Finish("o1", OK, False, 1.0), POLICY) == (None, Released())
    assert step(None, Finish("o1", OK, True, 1.0), POLICY) == (None, Lost())
    record = done()
    assert step(record, Finish("o1", OK, True, 2.0), POLICY) == (record, Lost())


@pytest.mark.parametrize(
    ("status", "complete", "billed", "failed", "kept"),
    [
        (200, True, False, False, True),  # an answer
        (202, True, False, False, True),  # a job created
        (200, True, True, True, True),  # a stream that failed after billed output
        (200, True, False, True, False),  # a stream that failed before any output
        (400, True, False, True, False),  # a refusal
        (429, True, False, True, False),
        (502, True, False, True, False),
        (502, True, True, True, True),  # billed, then failed: kept, a retry would pay again
        (200, False, True, True, False),  # the client went away: the next try runs
    ],
)
def test_keeps(status: int, complete: bool, billed: bool, failed: bool, kept: bool) -> None:
    assert idem.keeps(status, complete, billed, failed) is kept


def test_the_table_covers_every_phase_and_event() -> None:
    assert {(p, e) for p in idem.PHASES for e in (Arrive, Finish)} == set(idem.TRANSITIONS)


def test_errors_name_the_header_with_their_status_and_code() -> None:
    mismatch = idem.error_of(Mismatch())
    busy = idem.error_of(InProgress(0.5))
    assert mismatch is not None and busy is not None
    assert (mismatch.status, mismatch.code, mismatch.param) == (
        422, "idempotency_key_reused", "Idempotency-Key"
    )
    assert (busy.status, busy.code, busy.retry_after) == (409, "idempotency_key_in_use", 0.5)
    assert idem.error_of(Claimed("o")) is None


@pytest.mark.parametrize("bad", ["", "x" * 256, "tab\there", "é", " lead", "trail "])
def test_bad_keys_are_refused_naming_the_header(bad: str) -> None:
    with pytest.raises(idem.InvalidRequest) as info:
        idem.check_key(bad)
    assert info.value.param == "Idempotency-Key"


def test_good_keys_pass() -> None:
    assert idem.check_key("a" * 255) == "a" * 255
    assert idem.check_key("order 42 / retry") == "order 42 / retry"


def test_policy_refuses_non_positive_settings() -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        Policy(ttl_seconds=0)


# -- the fingerprint ----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.decimals(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=5), json_values, max_size=6))
def test_key_order_never_changes_the_fingerprint(body: dict[str, Any]) -> None:
    reordered = dict(reversed(list(body.items())))
    assert idem.fingerprint("/v1/x", body) == idem.fingerprint("/v1/x", reordered)


@given(st.decimals(allow_nan=False, allow_infinity=False), st.integers(0, 5))
def test_equal_numbers_agree_whatever_their_spelling(number: Decimal, zeros: int) -> None:
    padded = Decimal(f"{number:f}" + ("0" * zeros if "." in f"{number:f}" else ""))
    assert padded == number
    assert idem.fingerprint("/r", {"n": number}) == idem.fingerprint("/r", {"n": padded})


@given(json_values, json_values)
def test_different_values_differ(a: Any, b: Any) -> None:
    if idem.canonical(a) != idem.canonical(b):
        assert idem.fingerprint("/r", a) != idem.fingerprint("/r", b)


def test_the_route_and_the_type_of_a_value_are_part_of_it() -> None:
    assert idem.fingerprint("/v1/a", {"x": 1}) != idem.fingerprint("/v1/b", {"x": 1})
    assert idem.fingerprint("/r", {"x": 1}) != idem.fingerprint("/r", {"x": "1"})
    assert idem.fingerprint("/r", {"x": 1}) == idem.fingerprint("/r", {"x": Decimal("1.00")})
    assert idem.fingerprint("/r", {"x": None}) != idem.fingerprint("/r", {})


# -- the stateful machine -------------------------------------------------------------------


class KeyMachine(RuleBasedStateMachine):
    """One key, several requests with two possible bodies, a clock that may go back."""

    def __init__(self) -> None:
        super().__init__()
        self.record: idem.Record | None = None
        self.now = 0.0
        self.serial = 0
        self.holders: set[str] = set()  # owners told Claimed whose claim may still count
        self.kept: dict[str, Answer] = {}  # fingerprint -> the answer kept for it
        self.replays = 0

    @rule(dt=st.floats(-3.0, 60.0))
    def tick(self, dt: float) -> None:
        self.now = max(0.0, self.now + dt)

    @rule(fp=st.sampled_from(["a", "b"]))
    def arrive(self, fp: str) -> None:
        self.serial += 1
        owner = f"o{self.serial}"
        before = self.record
        self.record, decision = step(self.record, Arrive(fp, owner, self.now), POLICY)
        if isinstance(decision, Claimed):
            assert idem.phase(before, self.now) in ("absent", "lapsed", "expired")
            self.holders = {owner}  # a lapsed holder is superseded
            self.kept.clear()
        elif isinstance(decision, Replay):
            assert decision.answer == self.kept[fp]  # the same body's answer, never another's
            assert self.record is before
            self.replays += 1
        else:
            assert self.record is before
            assert isinstance(decision, InProgress | Mismatch)

    @precondition(lambda self: self.holders)
    @rule(keep=st.booleans(), status=st.sampled_from([200, 400, 502]))
    def finish(self, keep: bool, status: int) -> None:
        owner = sorted(self.holders)[0]
        answer = Answer(status, (), (f"{owner}".encode(),))
        fp = self.record.fingerprint if self.record is not None else "?"
        self.record, decision = step(self.record, Finish(owner, answer, keep, self.now), POLICY)
        self.holders.discard(owner)
        if isinstance(decision, Kept):
            self.kept[fp] = answer
        elif isinstance(decision, Released):
            assert self.record is None

    @invariant()
    def at_most_one_holder(self) -> None:
        assert len(self.holders) <= 1
        if self.record is not None and self.record.state == "running":
            assert self.holders <= {self.record.owner}

    @invariant()
    def a_done_record_keeps_its_answer(self) -> None:
        if self.record is not None and self.record.state == "done":
            assert self.kept.get(self.record.fingerprint) == self.record.answer


TestKeyMachine = KeyMachine.TestCase
