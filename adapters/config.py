"""Settings: the TOML config file, then the environment, then command-line flags.

Owns: turning configuration sources into one frozen `Settings` value. Precedence, lowest
first: built-in defaults < the TOML file (`--config` or `UMG_CONFIG`) < environment
variables < command-line flags. Nothing else in the gateway reads the environment.

Provider credentials are never stored in `Settings` as plain values printed anywhere:
`ProviderSettings.api_key` is excluded from `repr`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from decimal import Decimal
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from attrs import field, frozen

from adapters.providers.base import Timeouts
from adapters.stream_log import StreamSettings
from core import idempotency
from core.attempts import AttemptPolicy
from core.catalog import Catalog, catalog_from_data, merge_catalog_data
from core.health import HealthPolicy
from core.retention import RetentionPolicy
from core.webhooks import RETRY_DELAYS


class ConfigError(ValueError):
    pass


@frozen
class ProviderSettings:
    name: str  # label used by catalog deployments ("openai", "anthropic", "groq", ...)
    kind: str  # openai | anthropic | openai_compatible | mock
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    models: tuple[str, ...] = ()  # openai_compatible: upstream models it serves
    api: str = "chat"  # openai: "chat" (Chat Completions) or "responses" (Responses API)


def _default_limit(instance: object, attribute: Any, value: object) -> None:
    del instance
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"limits.{attribute.name} must be a whole number >= 1 (leave it out for no "
            f"default), not {value!r}"
        )


def _positive(instance: object, attribute: Any, value: object) -> None:
    del instance
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"limits.{attribute.name} must be a number > 0, not {value!r}")


def _whole_positive(instance: object, attribute: Any, value: object) -> None:
    del instance
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"limits.{attribute.name} must be a whole number >= 1, not {value!r}")


@frozen
class LimitSettings:
    # rpm / tpm for keys that have none of their own (None: such keys are unlimited)
    default_rpm: int | None = field(default=None, validator=_default_limit)
    default_tpm: int | None = field(default=None, validator=_default_limit)
    # on Postgres, budgets served from per-process slices (adapters/budget_slices.py);
    # false: every grant and settle is a transaction on the shared rows
    budget_slices: bool = True
    max_body_bytes: int = 4 * 1024 * 1024
    keepalive_seconds: float = 15.0
    # slow clients and body memory (server/bodylimit.py, server/serve.py)
    header_timeout_seconds: float = field(default=75.0, validator=_positive)
    body_timeout_seconds: float = field(default=30.0, validator=_positive)
    body_budget_bytes: int = field(default=32 * 1024 * 1024, validator=_positive)
    # connections to one provider origin open at once (adapters/providers/http11.py)
    upstream_connections: int = field(default=1024, validator=_whole_positive)

    def __attrs_post_init__(self) -> None:
        if self.body_budget_bytes < self.max_body_bytes:
            raise ValueError(
                f"limits.body_budget_bytes ({self.body_budget_bytes}) must be at least "
                f"limits.max_body_bytes ({self.max_body_bytes}), or no full-size body fits"
            )


def _log_level(instance: object, attribute: Any, value: object) -> None:
    del instance
    if value not in LOG_LEVELS:
        raise ValueError(f"{attribute.name} must be one of {', '.join(LOG_LEVELS)}, not {value!r}")


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@frozen
class JobSettings:
    workers: int = 4
    lease_seconds: float = 30.0
    max_attempts: int = 3
    # idle workers are woken in process when this process queues work (SQLite: all of
    # it); this is their fallback scan there (leases of workers that died)
    poll_seconds: float = 5.0
    # on Postgres idle workers wake on LISTEN/NOTIFY; this is their fallback scan (retries
    # coming due, expired leases)
    listen_poll_seconds: float = 5.0


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


@frozen
class MetricsSettings:
    enabled: bool = True  # count requests and answer GET /metrics (adapters/metrics.py)
    public: bool = False  # GET /metrics without an admin key


def _flag(section: Mapping[str, Any], name: str, default: bool, env: Mapping[str, str], var: str) -> bool:
    """A true/false setting: `var` in the environment, else `name` in the section."""
    if var in env:
        return _bool(env[var], var)
    value = section.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false")
    return value


def _metrics(file_cfg: Mapping[str, Any], env: Mapping[str, str]) -> MetricsSettings:
    """`[metrics]` (unknown keys refused), then `UMG_METRICS` and `UMG_METRICS_PUBLIC`."""
    section = _table(file_cfg, "metrics", MetricsSettings)
    return MetricsSettings(
        enabled=_flag(section, "enabled", True, env, "UMG_METRICS"),
        public=_flag(section, "public", False, env, "UMG_METRICS_PUBLIC"),
    )


def _webhooks(file_cfg: Mapping[str, Any], env: Mapping[str, str]) -> WebhookSettings:
    """`[webhooks]` (unknown keys refused), then `UMG_WEBHOOK_ALLOW_HOSTS` (comma-separated,
    replaces the file's list) and `UMG_WEBHOOK_ALLOW_HTTP`."""
    section = _table(file_cfg, "webhooks", WebhookSettings)
    hosts = section.get("allow_hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise ConfigError("webhooks.allow_hosts must be a list of host names")
    if "UMG_WEBHOOK_ALLOW_HOSTS" in env:
        hosts = [h.strip() for h in env["UMG_WEBHOOK_ALLOW_HOSTS"].split(",") if h.strip()]
    allow_http = section.get("allow_http", False)
    if not isinstance(allow_http, bool):
        raise ConfigError("webhooks.allow_http must be true or false")
    if "UMG_WEBHOOK_ALLOW_HTTP" in env:
        allow_http = _bool(env["UMG_WEBHOOK_ALLOW_HTTP"], "UMG_WEBHOOK_ALLOW_HTTP")
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


def _idempotency(file_cfg: Mapping[str, Any], env: Mapping[str, str]) -> idempotency.Policy:
    """`[idempotency]` (`ttl_seconds`, `lock_seconds`, `retry_after`), then
    `UMG_IDEMPOTENCY_TTL_SECONDS` and `UMG_IDEMPOTENCY_LOCK_SECONDS`."""
    section = _table(file_cfg, "idempotency", idempotency.Policy)
    for name, var in (("ttl_seconds", "UMG_IDEMPOTENCY_TTL_SECONDS"),
                      ("lock_seconds", "UMG_IDEMPOTENCY_LOCK_SECONDS")):
        if var in env:
            try:
                section[name] = float(env[var])
            except ValueError:
                raise ConfigError(f"{var} must be a number of seconds, not {env[var]!r}") from None
    return idempotency.Policy(**section)


RETENTION_ENV = (
    ("ledger_days", "UMG_RETENTION_LEDGER_DAYS", int),
    ("jobs_days", "UMG_RETENTION_JOBS_DAYS", int),
    ("outbox_days", "UMG_RETENTION_OUTBOX_DAYS", int),
    ("budget_periods_days", "UMG_RETENTION_BUDGET_PERIODS_DAYS", int),
    ("interval_seconds", "UMG_RETENTION_INTERVAL_SECONDS", float),
    ("batch_rows", "UMG_RETENTION_BATCH_ROWS", int),
)


def _retention(file_cfg: Mapping[str, Any], env: Mapping[str, str]) -> RetentionPolicy:
    """`[retention]` (unknown keys refused), then one `UMG_RETENTION_*` variable per key."""
    section = _table(file_cfg, "retention", RetentionPolicy)
    for name, var, kind in RETENTION_ENV:
        if var in env:
            try:
                section[name] = kind(env[var])
            except ValueError:
                what = "a whole number" if kind is int else "a number"
                raise ConfigError(f"{var} must be {what}, not {env[var]!r}") from None
    return RetentionPolicy(**section)


TRACE_EXPORTERS = ("otlp", "console")


@frozen
class TracingSettings:
    """Where spans go (adapters/tracing.py): `exporters` empty means tracing is off."""

    exporters: tuple[str, ...] = ()  # "otlp" and/or "console"
    endpoint: str | None = None  # the OTLP/HTTP traces URL (None: the SDK's default)
    capture_content: bool = False  # prompts and answers in span attributes
    # The batches in front of each exporter (adapters/trace_batch.py), from OTEL_BSP_*:
    batch_delay: float = 5.0  # seconds between hand-overs of what waits (SCHEDULE_DELAY, ms)
    batch_queue: int = 2048  # spans that may wait; more are dropped (MAX_QUEUE_SIZE)
    batch_size: int = 512  # spans per export (MAX_EXPORT_BATCH_SIZE, at most the queue)


BSP_VARIABLES = (
    ("OTEL_BSP_SCHEDULE_DELAY", 5000), ("OTEL_BSP_MAX_QUEUE_SIZE", 2048),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
)


def _bsp(env: Mapping[str, str]) -> tuple[int, int, int]:
    """The OTEL_BSP_* values (positive integers), the SDK's defaults where unset."""
    found: list[int] = []
    for name, default in BSP_VARIABLES:
        raw = env.get(name, "").strip()
        if raw and (not raw.isdigit() or int(raw) <= 0):
            raise ConfigError(f"{name} must be a positive integer, not {raw!r}")
        found.append(int(raw) if raw else default)
    return found[0], found[1], found[2]


def _tracing(file_cfg: Mapping[str, Any], env: Mapping[str, str]) -> TracingSettings:
    """`[tracing]` (exporter, endpoint, capture_content), then the standard variables:
    `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the traces URL as it is) or
    `OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/traces`) turn OTLP on; `OTEL_TRACES_EXPORTER`
    (comma-separated `otlp`, `console`, `none`) chooses explicitly; `OTEL_SDK_DISABLED=true`
    turns tracing off; `UMG_TRACE_CAPTURE_CONTENT` or the GenAI instrumentations'
    `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` switch content capture;
    `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`
    size the batches."""
    section = _table(file_cfg, "tracing", _TracingFile)
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or None
    if endpoint is None and env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    endpoint = endpoint or section.get("endpoint") or None
    chosen = env.get("OTEL_TRACES_EXPORTER") or section.get("exporter")
    if chosen is None:
        names: tuple[str, ...] = ("otlp",) if endpoint else ()
    else:
        if not isinstance(chosen, str):
            raise ConfigError("tracing.exporter must be a string: otlp, console or none")
        names = tuple(n.strip().lower() for n in chosen.split(",") if n.strip())
        unknown = sorted(set(names) - {*TRACE_EXPORTERS, "none"})
        if unknown:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER / tracing.exporter: unknown exporter(s) {unknown} "
                f"(expected otlp, console or none)"
            )
        names = tuple(n for n in TRACE_EXPORTERS if n in names)
    if "OTEL_SDK_DISABLED" in env and _bool(env["OTEL_SDK_DISABLED"], "OTEL_SDK_DISABLED"):
        names = ()
    capture = section.get("capture_content", False)
    if not isinstance(capture, bool):
        raise ConfigError("tracing.capture_content must be true or false")
    for name in ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "UMG_TRACE_CAPTURE_CONTENT"):
        if name in env:
            capture = _bool(env[name], name)
    delay_ms, queue, size = _bsp(env)
    return TracingSettings(
        exporters=names, endpoint=endpoint, capture_content=capture,
        batch_delay=delay_ms / 1000, batch_queue=queue, batch_size=min(size, queue),
    )


@frozen
class _TracingFile:
    """The keys `[tracing]` may have."""

    exporter: str | None = None
    endpoint: str | None = None
    capture_content: bool = False


def _streams(file_cfg: Mapping[str, Any], env: Mapping[str, str]) -> StreamSettings:
    """`[streams]` (unknown keys refused), then `UMG_STREAM_BUFFER` and
    `UMG_STREAM_RETENTION_SECONDS`."""
    section = _table(file_cfg, "streams", StreamSettings)
    if "UMG_STREAM_BUFFER" in env:
        section["buffer"] = _bool(env["UMG_STREAM_BUFFER"], "UMG_STREAM_BUFFER")
    if "UMG_STREAM_RETENTION_SECONDS" in env:
        section["retention_seconds"] = float(env["UMG_STREAM_RETENTION_SECONDS"])
    if not isinstance(section.get("buffer", True), bool):
        raise ConfigError("streams.buffer must be true or false")
    return StreamSettings(**section)


def _positive_seconds(instance: object, attribute: Any, value: float) -> None:
    del instance
    if not 0 < value <= 600:
        raise ValueError(f"{attribute.name} must be from 0 to 600 seconds, not {value!r}")


@frozen
class BudgetSetting:
    """A `[[budgets]]` entry: a project's (or, without `project`, a tenant's) budget."""

    tenant: str
    project: str  # "" for the tenant's own budget
    limit_usd: Decimal
    period: str = "month"


def _budgets(file_cfg: Mapping[str, Any]) -> tuple[BudgetSetting, ...]:
    """`[[budgets]]`: tenant, optional project, limit_usd (a string or whole number, never a
    float: money is exact) and period (day, month or total; default month)."""
    entries = file_cfg.get("budgets", [])
    if not isinstance(entries, list):
        raise ConfigError("budgets must be an array of tables ([[budgets]])")
    found: list[BudgetSetting] = []
    for n, item in enumerate(entries):
        where = f"budgets[{n}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where} must be a table")
        unknown = sorted(set(item) - {"tenant", "project", "limit_usd", "period"})
        if unknown:
            raise ConfigError(f"{where} has unknown keys {unknown}")
        tenant, project = item.get("tenant"), item.get("project", "")
        if not isinstance(tenant, str) or not tenant.strip() or not isinstance(project, str):
            raise ConfigError(f"{where}: tenant (and project, when given) must be non-empty strings")
        raw = item.get("limit_usd")
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise ConfigError(f"{where}.limit_usd must be a decimal string such as \"100.00\"")
        period = item.get("period", "month")
        if period not in ("day", "month", "total"):
            raise ConfigError(f"{where}.period must be day, month or total, not {period!r}")
        limit = parse_budget(str(raw))
        assert limit is not None
        found.append(BudgetSetting(tenant, project, limit, period))
    return tuple(found)


@frozen
class Settings:
    host: str = "127.0.0.1"
    port: int = 3000
    database_url: str = "sqlite:///data/gateway.db"
    # Postgres: wait this long for a connection, then the database counts as unreachable
    database_pool_timeout_seconds: float = field(default=5.0, validator=_positive_seconds)
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


# What a compatible server's model gets when the operator says nothing more about it: the
# limits of a typical modern open model, and price 0 (right for a local server; for a
# paid one, set the price in `[catalog.models."<name>/<model>"]`).
def compatible_defaults() -> dict[str, Any]:
    return {
        "context_window": 131072,
        "max_output_tokens": 8192,
        "capabilities": ["tools", "json"],
        "price": {"input": "0", "output": "0", "version": "unpriced"},
    }


def compatible_catalog_data(providers: tuple[ProviderSettings, ...]) -> dict[str, Any]:
    """Catalog entries `<provider name>/<upstream model>` for each OpenAI-compatible
    provider's listed models (merged under the operator's own catalog overrides)."""
    models: dict[str, Any] = {}
    for p in providers:
        if p.kind != "openai_compatible":
            continue
        for upstream in p.models:
            models[f"{p.name}/{upstream}"] = {
                "owned_by": p.name,
                "created": 0,
                "deployments": [
                    {"provider": p.name, "upstream_model": upstream, **compatible_defaults()}
                ],
            }
    return {"models": models}


def _bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}")


# label -> (API key variable, base URL variable, default base URL)
BUILTIN_PROVIDERS: Mapping[str, tuple[str, str, str]] = MappingProxyType({
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL", "https://api.openai.com/v1"),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
})
_TITLES: Mapping[str, str] = MappingProxyType({"openai": "OpenAI", "anthropic": "Anthropic"})


def how_to_add_providers() -> dict[str, str]:
    """Provider label -> one sentence on how to configure it (for "model not served" errors)."""
    return {
        name: f"To add {_TITLES[name]}, set {key_var} in the gateway's environment (or "
        f"[providers.{name}] api_key_env in its config file; see docs/providers.md) and "
        "restart it."
        for name, (key_var, _, _) in BUILTIN_PROVIDERS.items()
    }


def _providers(file_cfg: Mapping[str, Any], env: Mapping[str, str]) -> tuple[ProviderSettings, ...]:
    section = file_cfg.get("providers", {})
    found: list[ProviderSettings] = []
    for name, (key_var, url_var, default_url) in BUILTIN_PROVIDERS.items():
        cfg = section.get(name, {})
        key = env.get(cfg.get("api_key_env", key_var)) or cfg.get("api_key")
        url = env.get(url_var) or cfg.get("base_url") or default_url
        if key:
            api = cfg.get("api", "chat") if name == "openai" else "chat"
            if not isinstance(api, str):
                raise ConfigError(f"providers.{name}.api must be a string, not {api!r}")
            found.append(ProviderSettings(name=name, kind=name, base_url=url, api_key=key, api=api))
    for item in section.get("compatible", []):
        try:
            name, url = item["name"], item["base_url"]
        except KeyError as missing:
            raise ConfigError(f"providers.compatible entries need {missing}") from None
        key_env = item.get("api_key_env")
        found.append(
            ProviderSettings(
                name=name,
                kind="openai_compatible",
                base_url=url,
                api_key=env.get(key_env) if key_env else item.get("api_key"),
                models=tuple(item.get("models", ())),
            )
        )
    return tuple(found)


def _table(file_cfg: Mapping[str, Any], name: str, allowed: Any) -> dict[str, Any]:
    """A table (`[attempts]`, `[timeouts]`, `[health]`, `[webhooks]`): keys must be fields of
    `allowed` (an attrs class), so a typo is an error rather than silently ignored."""
    section = file_cfg.get(name, {})
    if not isinstance(section, Mapping):
        raise ConfigError(f"[{name}] must be a table")
    known = {a.name for a in allowed.__attrs_attrs__}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"[{name}] has unknown keys {unknown}; known: {sorted(known)}")
    return dict(section)


def load_settings(
    env: Mapping[str, str],
    *,
    config_path: str | None = None,
    host: str | None = None,
    port: int | None = None,
    database_url: str | None = None,
) -> Settings:
    path = config_path or env.get("UMG_CONFIG")
    file_cfg: dict[str, Any] = {}
    if path:
        try:
            file_cfg = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"cannot read config file {path}: {err}") from None
    server = file_cfg.get("server", {})
    limits = file_cfg.get("limits", {})
    jobs = file_cfg.get("jobs", {})
    providers = _providers(file_cfg, env)
    mock_default = not providers
    mock_cfg = file_cfg.get("mock_mode", mock_default)
    mock = _bool(env["MOCK_MODE"], "MOCK_MODE") if "MOCK_MODE" in env else bool(mock_cfg)
    try:
        return Settings(
            host=host or env.get("HOST") or server.get("host", "127.0.0.1"),
            port=int(port if port is not None else env.get("PORT") or server.get("port", 3000)),
            database_url=database_url
            or env.get("DATABASE_URL")
            or file_cfg.get("database_url", "sqlite:///data/gateway.db"),
            database_pool_timeout_seconds=float(
                env.get("UMG_DB_POOL_TIMEOUT_SECONDS")
                or file_cfg.get("database_pool_timeout_seconds", 5.0)
            ),
            mock_mode=mock,
            providers=providers,
            catalog_overrides=file_cfg.get("catalog", {}),
            limits=LimitSettings(
                default_rpm=limits.get("default_rpm"),
                default_tpm=limits.get("default_tpm"),
                budget_slices=_flag(limits, "budget_slices", True, env, "UMG_BUDGET_SLICES"),
                max_body_bytes=int(limits.get("max_body_bytes", 4 * 1024 * 1024)),
                keepalive_seconds=float(limits.get("keepalive_seconds", 15.0)),
                header_timeout_seconds=float(
                    env.get("UMG_HEADER_TIMEOUT_SECONDS")
                    or limits.get("header_timeout_seconds", 75.0)
                ),
                body_timeout_seconds=float(
                    env.get("UMG_BODY_TIMEOUT_SECONDS") or limits.get("body_timeout_seconds", 30.0)
                ),
                body_budget_bytes=int(
                    env.get("UMG_BODY_BUDGET_BYTES")
                    or limits.get("body_budget_bytes", 32 * 1024 * 1024)
                ),
                upstream_connections=limits.get("upstream_connections", 1024),
            ),
            jobs=JobSettings(
                workers=int(jobs.get("workers", 4)),
                lease_seconds=float(jobs.get("lease_seconds", 30.0)),
                max_attempts=int(jobs.get("max_attempts", 3)),
                poll_seconds=float(jobs.get("poll_seconds", 5.0)),
                listen_poll_seconds=float(jobs.get("listen_poll_seconds", 5.0)),
            ),
            webhooks=_webhooks(file_cfg, env),
            streams=_streams(file_cfg, env),
            metrics=_metrics(file_cfg, env),
            request_log=_flag(server, "request_log", True, env, "UMG_REQUEST_LOG"),
            tracing=_tracing(file_cfg, env),
            attempts=AttemptPolicy(**_table(file_cfg, "attempts", AttemptPolicy)),
            timeouts=Timeouts(**_table(file_cfg, "timeouts", Timeouts)),
            health=HealthPolicy(**_table(file_cfg, "health", HealthPolicy)),
            idempotency=_idempotency(file_cfg, env),
            budgets=_budgets(file_cfg),
            retention=_retention(file_cfg, env),
            log_level=str(env.get("LOG_LEVEL") or server.get("log_level", "info")).lower(),
            third_party_log_level=str(
                env.get("UMG_THIRD_PARTY_LOG_LEVEL") or server.get("third_party_log_level", "warning")
            ).lower(),
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid configuration: {err}") from None


def parse_budget(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except ArithmeticError:
        raise ConfigError(f"budget must be a decimal amount in USD, not {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ConfigError("budget must be a non-negative amount")
    return amount
