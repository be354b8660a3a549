"""`[webhooks]`: where job webhooks may go, and how their deliveries are retried.

Owns: `WebhookSettings` and reading it from `[webhooks]` and the `UMG_WEBHOOK_*`
variables, each value checked (`ConfigError` naming the key).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import frozen

from adapters.config.values import ConfigError, boolean, table
from core.webhooks import RETRY_DELAYS


@frozen
class WebhookSettings:
    # host names (exact, case-insensitive) whose webhooks may reach any address
    allow_hosts: tuple[str, ...] = ()
    allow_http: bool = False  # plain-http webhook URLs (otherwise https only)
    # seconds before each retry after a failed delivery (core.outbox): at most
    # 1 + len(retry_delays) attempts per message
    retry_delays: tuple[float, ...] = RETRY_DELAYS
    workers: int = 2  # delivery workers per process that runs workers
    lease_seconds: float = 60.0  # how long one attempt may hold its delivery


def read_webhooks(file_cfg: Mapping[str, Any], env: Mapping[str, str]) -> WebhookSettings:
    """`[webhooks]` (unknown keys refused), then `UMG_WEBHOOK_ALLOW_HOSTS` (comma-separated,
    replaces the file's list) and `UMG_WEBHOOK_ALLOW_HTTP`."""
    section = table(file_cfg, "webhooks", WebhookSettings)
    hosts = section.get("allow_hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise ConfigError("webhooks.allow_hosts must be a list of host names")
    if "UMG_WEBHOOK_ALLOW_HOSTS" in env:
        hosts = [h.strip() for h in env["UMG_WEBHOOK_ALLOW_HOSTS"].split(",") if h.strip()]
    allow_http = section.get("allow_http", False)
    if not isinstance(allow_http, bool):
        raise ConfigError("webhooks.allow_http must be true or false")
    if "UMG_WEBHOOK_ALLOW_HTTP" in env:
        allow_http = boolean(env["UMG_WEBHOOK_ALLOW_HTTP"], "UMG_WEBHOOK_ALLOW_HTTP")
    delays = section.get("retry_delays", list(RETRY_DELAYS))
    if not isinstance(delays, list) or not all(
        isinstance(d, int | float) and not isinstance(d, bool) and d >= 0 for d in delays
    ):
        raise ConfigError("webhooks.retry_delays must be a list of seconds (>= 0)")
    workers = section.get("workers", 2)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError("webhooks.workers must be an integer >= 1")
    lease = section.get("lease_seconds", 60.0)
    if isinstance(lease, bool) or not isinstance(lease, int | float) or not lease > 0:
        raise ConfigError("webhooks.lease_seconds must be a number of seconds > 0")
    return WebhookSettings(
        allow_hosts=tuple(hosts), allow_http=allow_http,
        retry_delays=tuple(float(d) for d in delays), workers=workers, lease_seconds=float(lease),
    )  # fmt: skip
