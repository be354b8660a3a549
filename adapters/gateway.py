"""The gateway's parts, assembled: storage, catalog, providers, limits, health, the driver.

Owns: wiring one process's request machinery together. Every model request runs through
`Gateway.driver` (adapters/driver.py: authenticate, admit, attempts, settle, one ledger
row); `limits` (rate limits and budgets) and `health` (the health book routing reads)
are shared by every request of the process.
"""

from __future__ import annotations

from collections.abc import Mapping

from adapters.clock import Clock
from adapters.driver import Driver, new_id
from adapters.health_book import HealthBook
from adapters.limits import Limits
from adapters.observe import Observer
from adapters.providers.base import Provider, Timeouts
from adapters.runs import RunRegistry
from adapters.storage.base import Storage
from adapters.storage.records import KeyRecord
from core import attempts
from core.catalog import Catalog


class Gateway:
    def __init__(
        self,
        *,
        storage: Storage,
        catalog: Catalog,
        providers: Mapping[str, Provider],
        clock: Clock,
        health: HealthBook | None = None,
        attempt_policy: attempts.AttemptPolicy | None = None,
        timeouts: Timeouts | None = None,
        default_rpm: int | None = None,
        default_tpm: int | None = None,
        budget_slices: bool = True,
        runs: RunRegistry | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.storage = storage
        self.catalog = catalog
        self.providers = providers
        self.clock = clock
        self.health = health or HealthBook()
        if observer is not None:
            self.health.observer = observer  # breaker transitions
        # the defaults apply to keys without an rpm / tpm of their own ([limits] in config)
        self.limits = Limits(storage, clock, default_rpm=default_rpm, default_tpm=default_tpm,
                             budget_slices=budget_slices)
        self.driver = Driver(
            storage=storage,
            catalog=catalog,
            providers=providers,
            clock=clock,
            health=self.health,
            limits=self.limits,
            attempt_policy=attempt_policy or attempts.AttemptPolicy(),
            timeouts=timeouts or Timeouts(),
            runs=runs,
            observer=observer,
        )

    async def authenticate(self, token: str | None) -> KeyRecord:
        return await self.driver.authenticate(token)


__all__ = ["Gateway", "new_id"]
