"""What the app is built from: every dependency a route needs, passed in, never global.

Owns: the `Services` bundle handed to `create_app`, and `build_services`, which wires
settings into storage, catalog, providers, the gateway and its observers (`observers`:
the request log and the metrics, each unless turned off; tracing when an exporter is
configured). Tests build their own. adapters/tracing.py, and with it the OpenTelemetry
SDK, is imported only when tracing is configured: with it off the process never loads it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from attrs import define

from adapters.budgets import budget_record
from adapters.clock import Clock
from adapters.config.providers import how_to_add_providers
from adapters.config.settings import Settings
from adapters.gateway import Gateway
from adapters.health_book import HealthBook
from adapters.jobs import JobService
from adapters.metrics import Metrics
from adapters.observe import Observer, fan_out
from adapters.providers.base import Provider
from adapters.providers.http11 import PoolLimits
from adapters.providers.http_provider import HttpProvider
from adapters.providers.mock import MockProvider
from adapters.providers.registry import real_providers
from adapters.providers.transport import H11Transport, Transport
from adapters.request_log import RequestLog
from adapters.runs import Detached, RunRegistry
from adapters.storage import open_storage
from adapters.storage.base import Storage
from adapters.stream_log import StreamLog
from adapters.trace_spans import TraceObserver
from adapters.webhook_delivery import Deliverer, new_client
from core import jobs as lifecycle
from core import outbox, webhook_targets
from core.catalog import Catalog, restrict_to_providers
from server.jobview import render_job

if TYPE_CHECKING:
    from adapters.tracing import Tracing

log = logging.getLogger("umg")


@define
class Services:
    settings: Settings
    storage: Storage
    gateway: Gateway
    clock: Clock
    stream_log: StreamLog  # recorded streams (resumable /v1/responses streams)
    detached: Detached  # runs that go on after their client left (recorded streams)
    jobs: JobService | None = None
    transport: Transport | None = None  # the pooled upstream client (closed on shutdown)
    metrics: Metrics | None = None  # GET /metrics ([metrics] enabled)
    tracing: Tracing | None = None  # OpenTelemetry (adapters/tracing.py); None: off

    @property
    def streams(self) -> RunRegistry:
        """The runs in flight and the drain state (the driver's registry)."""
        return self.gateway.driver.runs

    async def close(self) -> None:
        if self.tracing is not None:
            await self.tracing.aclose()
        if self.transport is not None:
            await self.transport.aclose()
        if self.jobs is not None and self.jobs.deliverer.http is not None:
            await self.jobs.deliverer.http.aclose()
        await self.stream_log.close()
        try:
            await self.gateway.limits.aclose()  # budget slices given back
        except self.storage.errors as err:
            log.warning("budget slices not given back at shutdown: %s: %s", type(err).__name__, err)
        await self.storage.close()


def attach_tracing(services: Services, tracing: Tracing) -> None:
    """Trace every run of `services` with `tracing`: its observer next to the others, and
    the provider calls carrying the current span's W3C headers."""
    services.tracing = tracing
    driver = services.gateway.driver
    driver.observer = fan_out(driver.observer, TraceObserver(tracing, services.clock))
    for provider in driver.providers.values():
        if isinstance(provider, HttpProvider):
            provider.propagate = tracing.outgoing


def build_providers(
    settings: Settings, catalog: Catalog, transport: Transport | None
) -> dict[str, Provider]:
    """Provider label -> adapter. In mock mode every label is served by the Mock."""
    mock = MockProvider()
    if settings.mock_mode:
        labels = {d.provider for m in catalog.models.values() for d in m.deployments}
        return {label: mock for label in labels | {"mock"}}
    assert transport is not None
    providers: dict[str, Provider] = {"mock": mock}
    providers.update(real_providers(settings.providers, transport))
    return providers


def serving_catalog(settings: Settings) -> Catalog:
    """The catalog this process can answer: in live mode, only configured providers'."""
    catalog = settings.catalog()
    if settings.mock_mode:
        return catalog
    labels = frozenset({"mock", *(p.name for p in settings.providers)})
    return restrict_to_providers(catalog, labels, how_to_add_providers())


def observers(settings: Settings, catalog: Catalog) -> tuple[Observer | None, Metrics | None]:
    """The observers settings ask for (adapters/observe.py), as one, and the metrics."""
    metrics = Metrics(catalog.models) if settings.metrics.enabled else None
    return fan_out(RequestLog() if settings.request_log else None, metrics), metrics


async def build_services(settings: Settings) -> Services:
    clock = Clock()
    catalog = serving_catalog(settings)
    observer, metrics = observers(settings, catalog)
    pool = PoolLimits(max_connections=settings.limits.upstream_connections)
    transport = None if settings.mock_mode else H11Transport(limits=pool)
    providers = build_providers(settings, catalog, transport)
    storage = open_storage(  # SQLite: one serving process
        settings.database_url, owner=True, pool_timeout=settings.database_pool_timeout_seconds,
        rollup_seconds=settings.database_rollup_seconds,
    )
    await storage.migrate()
    gateway = Gateway(
        storage=storage,
        catalog=catalog,
        providers=providers,
        clock=clock,
        health=HealthBook(settings.health),
        attempt_policy=settings.attempts,
        timeouts=settings.timeouts,
        default_rpm=settings.limits.default_rpm,
        default_tpm=settings.limits.default_tpm,
        budget_slices=settings.limits.budget_slices,
        observer=observer,
    )
    if settings.mock_mode:
        log.info("mock mode: every catalog model is served by the Mock provider")
    else:
        log.info(
            "live mode: providers %s serve %d models",
            ", ".join(sorted(p.name for p in settings.providers)),
            len(catalog.models),
        )
    deliverer = Deliverer(
        storage,
        clock,
        new_client,
        render=render_job,
        policy=outbox.DeliveryPolicy(
            lease_seconds=settings.webhooks.lease_seconds,
            retry_delays=settings.webhooks.retry_delays,
        ),
        targets=webhook_targets.TargetPolicy(
            allow_hosts=frozenset(settings.webhooks.allow_hosts),
            allow_http=settings.webhooks.allow_http,
        ),
        poll_seconds=settings.jobs.poll_seconds,
    )
    jobs = JobService(
        storage,
        gateway,
        clock,
        deliverer=deliverer,
        policy=job_policy(settings),
        poll_seconds=settings.jobs.poll_seconds,
        delivery_workers=settings.webhooks.workers,
    )
    for b in settings.budgets:  # [[budgets]] in the config file: the file wins at start
        await gateway.limits.budgets.put(
            budget_record(b.tenant, b.project, b.limit_usd, b.period, clock.wall())
        )
    jobs.observer = deliverer.observer = observer
    services = Services(
        settings=settings, storage=storage, gateway=gateway, clock=clock, transport=transport,
        jobs=jobs, metrics=metrics,
        stream_log=StreamLog(storage, clock, settings.streams),
        detached=Detached(settings.streams.max_detached),
    )
    if settings.tracing.exporters:  # only then is the SDK imported
        from adapters.tracing import Tracing

        tracing = Tracing.from_settings(settings.tracing)
        assert tracing is not None
        attach_tracing(services, tracing)
        log.info("tracing: spans exported to %s", ", ".join(settings.tracing.exporters))
    return services


def job_policy(settings: Settings) -> lifecycle.JobPolicy:
    return lifecycle.JobPolicy(
        lease_seconds=settings.jobs.lease_seconds, max_attempts=settings.jobs.max_attempts
    )
