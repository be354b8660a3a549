"""Fallback across providers (core/fallback.py and its use by the attempt machine).

The headline property: a plan with two or more providers reaches a second provider
within two attempts after a provider-level failure, and never retries a down provider
while a live one is left untried.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from core.attempts import AttemptFailed, AttemptPolicy, Phase, SleepUntil, Woke, step
from core.fallback import PROVIDER_DOWN_KINDS, prefer_live, switch_provider
from core.model import RETRYABLE_KINDS, FailureKind
from tests.core.test_attempts import POLICIES, Driver, dep

A1, A2, B1, B2, C1 = dep("a1", "a"), dep("a2", "a"), dep("b1", "b"), dep("b2", "b"), dep("c1", "c")
DOWN = sorted(PROVIDER_DOWN_KINDS, key=str)
RETRYABLE = sorted(RETRYABLE_KINDS, key=str)


def test_provider_down_kinds_are_the_retryable_ones_except_a_429() -> None:
    assert PROVIDER_DOWN_KINDS == RETRYABLE_KINDS - {FailureKind.RATE_LIMITED}


def test_prefer_live_moves_down_providers_behind_the_live_ones_keeping_the_tried_prefix() -> None:
    plan = (A1, A2, B1, B2, C1)
    assert prefer_live(plan, 0, frozenset({"a"})) == (A1, B1, B2, C1, A2)
    assert prefer_live(plan, 0, frozenset()) == plan
    # the tried prefix never moves, even when it holds a down provider
    assert prefer_live((A1, B1, A2, C1), 1, frozenset({"a", "b"})) == (A1, B1, C1, A2)
    assert prefer_live(plan, 4, frozenset({"c"})) == plan


def test_switch_provider_only_when_the_failed_one_is_down_and_a_live_one_is_next() -> None:
    assert switch_provider((A1, B1), 0, frozenset({"a"}))
    assert not switch_provider((A1, B1), 0, frozenset())  # not down: ordinary retry rules
    assert not switch_provider((A1, A2), 0, frozenset({"a"}))  # no live provider left
    assert not switch_provider((A1,), 0, frozenset({"a"}))


@pytest.mark.parametrize("kind", DOWN)
def test_a_provider_level_failure_skips_the_retry_and_the_same_provider(kind: FailureKind) -> None:
    driver = Driver(3, AttemptPolicy(), 0.0, providers=("a", "a", "b"))
    driver.feed(AttemptFailed(kind), 1.0)
    assert [c.deployment.provider for c in driver.calls] == ["a", "b"]
    assert driver.calls[-1].attempt == 2
    # the same-provider deployment was not dropped: it comes after the live one
    assert [d.upstream_model for d in driver.state.plan] == ["m0", "m2", "m1"]


def test_a_429_still_retries_the_same_deployment() -> None:
    driver = Driver(2, AttemptPolicy(), 0.0, providers=("a", "b"))
    driver.feed(AttemptFailed(FailureKind.RATE_LIMITED, retry_after=1.0), 1.0)
    assert driver.state.phase is Phase.SLEEPING


def test_an_openai_wide_outage_reaches_claude_with_the_default_policy() -> None:
    # the shape of gpt-4.1's cost-ordered plan: gpt-4.1, gpt-4o (OpenAI), claude-sonnet-4
    driver = Driver(3, AttemptPolicy(), 0.0, providers=("openai", "openai", "anthropic"))
    driver.feed(AttemptFailed(FailureKind.SERVER_ERROR), 0.5)
    assert [c.deployment.provider for c in driver.calls] == ["openai", "anthropic"]


PROVIDER_LISTS = st.lists(st.sampled_from(["a", "b", "c"]), min_size=2, max_size=6).filter(
    lambda ps: len(set(ps)) >= 2
)


@given(providers=PROVIDER_LISTS, policy=POLICIES, first=st.sampled_from(DOWN),
       kinds=st.lists(st.sampled_from(RETRYABLE), min_size=12, max_size=12))
def test_a_second_provider_is_reached_within_two_attempts_after_a_provider_failure(
    providers: list[str], policy: AttemptPolicy, first: FailureKind, kinds: list[FailureKind]
) -> None:
    # enough attempts and time for two more calls
    assume(policy.max_attempts >= 3 and policy.total_timeout > 2 * policy.max_backoff + 1)
    driver = Driver(len(providers), policy, 0.0, providers=tuple(providers))
    failed_provider = driver.calls[0].deployment.provider
    driver.feed(AttemptFailed(first), 0.0)
    for kind in kinds[:1]:  # one more attempt, whatever happens to the next one
        if driver.state.done or len(driver.calls) >= 3:
            break
        if driver.state.phase is Phase.SLEEPING:
            driver.feed(Woke(), 0.0)
        else:
            driver.feed(AttemptFailed(kind), 0.0)
    assert {c.deployment.provider for c in driver.calls[:3]} - {failed_provider}, driver.calls


@given(providers=PROVIDER_LISTS, policy=POLICIES,
       kinds=st.lists(st.sampled_from(RETRYABLE), min_size=30, max_size=30))
def test_no_down_provider_is_called_while_a_live_one_is_left(
    providers: list[str], policy: AttemptPolicy, kinds: list[FailureKind]
) -> None:
    driver = Driver(len(providers), policy, 0.0, providers=tuple(providers))
    down: set[str] = set()
    for kind in kinds:
        if driver.state.done:
            break
        if driver.state.phase is Phase.SLEEPING:
            driver.feed(Woke(), 0.0)
            continue
        state = driver.state
        calls_before = len(driver.calls)
        failed_provider = driver.calls[-1].deployment.provider
        if kind in PROVIDER_DOWN_KINDS:
            down.add(failed_provider)
        tried = {c.deployment.id for c in driver.calls}
        untried_live = [d for d in state.plan if d.id not in tried and d.provider not in down]
        _, actions = step(state, AttemptFailed(kind), driver.now)
        driver.feed(AttemptFailed(kind), 0.0)
        if len(driver.calls) > calls_before:
            called = driver.calls[-1].deployment
            if untried_live and called.provider in down:
                raise AssertionError(f"called down {called.id} while {untried_live} was left")
        if kind in PROVIDER_DOWN_KINDS and untried_live:
            assert not any(isinstance(a, SleepUntil) for a in actions), "slept on a down provider"
