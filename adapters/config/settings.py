"""The frozen `Settings` value: every section, the server's own keys, and the catalog.

Owns: what the gateway's settings are (one attrs value, made by `loader.py`), the
checks on its own keys (log levels, the Postgres pool timeout), and the catalog it
serves: the default catalog, the OpenAI-compatible providers' models, then the
operator's overrides.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from importlib import resources
from typing import Any

from attrs import field, frozen

from adapters.config.budgets import BudgetSetting
from adapters.config.jobs import JobSettings
from adapters.config.limits import LimitSettings
from adapters.config.metrics import MetricsSettings
from adapters.config.providers import ProviderSettings, compatible_catalog_data
from adapters.config.tracing import TracingSettings
from adapters.config.webhooks import WebhookSettings
from adapters.providers.base import Timeouts
from adapters.stream_log import StreamSettings
from core import idempotency
from core.attempts import AttemptPolicy
from core.catalog import Catalog, catalog_from_data, merge_catalog_data
from core.health import HealthPolicy
from core.retention import RetentionPolicy


def _log_level(instance: object, attribute: Any, value: object) -> None:
    del instance
    if value not in LOG_LEVELS:
        raise ValueError(f"{attribute.name} must be one of {', '.join(LOG_LEVELS)}, not {value!r}")


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _positive_seconds(instance: object, attribute: Any, value: float) -> None:
    del instance
    if not 0 < value <= 600:
        raise ValueError(f"{attribute.name} must be from 0 to 600 seconds, not {value!r}")


@frozen
class Settings:
    host: str = "127.0.0.1"
    port: int = 3000
    database_url: str = "sqlite:///data/gateway.db"
    # Postgres: wait this long for a connection, then the database counts as unreachable
    database_pool_timeout_seconds: float = field(default=5.0, validator=_positive_seconds)
    # SQLite: the rollups are written at most this long behind the ledger (rollup_behind.py)
    database_rollup_seconds: float = field(default=1.0, validator=_positive_seconds)
    mock_mode: bool = True
    providers: tuple[ProviderSettings, ...] = ()
    catalog_overrides: Mapping[str, Any] = field(factory=dict)
    limits: LimitSettings = field(factory=LimitSettings)
    jobs: JobSettings = field(factory=JobSettings)
    webhooks: WebhookSettings = field(factory=WebhookSettings)
    streams: StreamSettings = field(factory=StreamSettings)
    metrics: MetricsSettings = field(factory=MetricsSettings)
    request_log: bool = True  # one JSON line per request (adapters/request_log.py)
    attempts: AttemptPolicy = field(factory=AttemptPolicy)
    timeouts: Timeouts = field(factory=Timeouts)
    health: HealthPolicy = field(factory=HealthPolicy)
    idempotency: idempotency.Policy = field(factory=idempotency.Policy)
    budgets: tuple[BudgetSetting, ...] = ()  # [[budgets]]: written to storage at start
    tracing: TracingSettings = field(factory=TracingSettings)
    retention: RetentionPolicy = field(factory=RetentionPolicy)
    log_level: str = field(default="info", validator=_log_level)
    # httpx, httpcore, hypercorn (adapters/telemetry.py); never below log_level
    third_party_log_level: str = field(default="warning", validator=_log_level)

    def catalog(self) -> Catalog:
        """Default catalog + the models of OpenAI-compatible providers + operator overrides."""
        base = tomllib.loads(resources.files("core").joinpath("default_catalog.toml").read_text())
        data = merge_catalog_data(base, compatible_catalog_data(self.providers))
        if self.catalog_overrides:
            data = merge_catalog_data(data, dict(self.catalog_overrides))
        return catalog_from_data(data)
