"""This process's view of every deployment's health.

Owns: the mutable map from deployment id to `core.health.DeploymentHealth`, updated with
every attempt's outcome through the machine's `step`, whose actions it performs (a
circuit that opens or closes is told to the `observer`, adapters/observe.py, which logs
and counts it). The rules (rolling success rate, latency, circuit breaker) are
`core.health`'s; this object only keeps the latest state per deployment. Health is
per process on purpose: each gateway process observes its own path to each provider.
"""

from __future__ import annotations

from collections.abc import Mapping

from adapters.observe import BreakerChanged, Observer
from core import health
from core.model import FailureKind


class HealthBook:
    def __init__(
        self, policy: health.HealthPolicy | None = None, observer: Observer | None = None
    ) -> None:
        self.policy = policy or health.HealthPolicy()
        self.observer = observer
        self._states: dict[str, health.DeploymentHealth] = {}

    def snapshot(self) -> Mapping[str, health.DeploymentHealth]:
        return dict(self._states)

    def observe(
        self, deployment_id: str, ok: bool, latency: float | None, kind: FailureKind | None, now: float
    ) -> None:
        outcome = health.Outcome(ok=ok, latency=latency, kind=kind)
        self._step(deployment_id, health.Observed(outcome), now)

    def begin_attempt(self, deployment_id: str, now: float) -> None:
        """Mark a half-open probe in flight, so only one request probes a cooled-down deployment."""
        state = self._states.get(deployment_id)
        if state is not None and state.circuit != "closed":
            self._step(deployment_id, health.ProbeStarting(), now)

    def _step(self, deployment_id: str, event: health.HealthEvent, now: float) -> None:
        state, actions = health.step(self._states.get(deployment_id), event, now, self.policy)
        self._states[deployment_id] = state
        if self.observer is not None:
            for action in actions:
                self.observer.breaker_changed(
                    BreakerChanged(deployment_id, action.before, action.after, now)
                )
