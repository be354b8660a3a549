"""Fallback across providers: which deployment comes next once a provider looks down.

Owns: the rule that a failure saying the whole provider is down moves the request to
another provider before it tries more of the same one. Pure; the attempt machine
(core/attempts.py) calls it after every failed attempt.

Rules:
- A provider-level failure is one that says the provider, not this request, is in
  trouble: `PROVIDER_DOWN_KINDS` = server_error (5xx), overloaded (503/529), timeout,
  connect_error (refused, DNS, TLS) and stream_cut (reset or malformed before the first
  chunk: after it there is no fallback at all). rate_limited is not one: a 429 is about
  the gateway's quota, and its retry-after says when the same provider works again.
- A provider is down for this request once one of its attempts ended with such a kind.
- `prefer_live(plan, index, down)` reorders the untried tail `plan[index + 1:]`: the
  deployments of providers not down first, then those of down providers, each part in
  its plan order (a stable partition). The tried prefix `plan[: index + 1]` never moves,
  so "never going back in the plan" still holds on the reordered plan.
- `switch_provider(plan, index, down)` says whether the next attempt must leave the
  current deployment at once (no retry, no sleep): true when the failed provider is down
  and the reordered tail starts with a provider that is not. When every untried
  deployment is on a down provider, the machine's ordinary retry rules apply.
"""

from __future__ import annotations

from core.catalog import Deployment
from core.model import FailureKind

PROVIDER_DOWN_KINDS: frozenset[FailureKind] = frozenset(
    {
        FailureKind.SERVER_ERROR,
        FailureKind.OVERLOADED,
        FailureKind.TIMEOUT,
        FailureKind.CONNECT,
        FailureKind.STREAM_CUT,
    }
)
PROVIDER_DOWN_OUTCOMES: frozenset[str] = frozenset(k.value for k in PROVIDER_DOWN_KINDS)


def prefer_live(
    plan: tuple[Deployment, ...], index: int, down: frozenset[str]
) -> tuple[Deployment, ...]:
    """`plan` with its untried tail reordered: live providers first, down ones after."""
    head, tail = plan[: index + 1], plan[index + 1 :]
    live = tuple(d for d in tail if d.provider not in down)
    return (*head, *live, *(d for d in tail if d.provider in down))


def switch_provider(plan: tuple[Deployment, ...], index: int, down: frozenset[str]) -> bool:
    """After `prefer_live`: must the next attempt go to plan[index + 1] right away?"""
    nxt = index + 1
    return plan[index].provider in down and nxt < len(plan) and plan[nxt].provider not in down
