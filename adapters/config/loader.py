"""`load_settings`: the file, the environment and the flags, made into one `Settings`.

Owns: where the config file is (`--config`, else `UMG_CONFIG`), the server's own keys
(host, port, database, mock mode, logging) and their variables and flags, and the order
the sources apply in: built-in defaults < the TOML file < environment variables <
command-line flags. Each section is read by its own module; any bad value is a
`ConfigError`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adapters.config.budgets import read_budgets
from adapters.config.jobs import read_jobs
from adapters.config.limits import read_limits
from adapters.config.metrics import read_metrics
from adapters.config.policies import read_idempotency, read_retention, read_streams
from adapters.config.providers import read_providers
from adapters.config.settings import Settings
from adapters.config.tracing import read_tracing
from adapters.config.values import ConfigError, boolean, flag, table
from adapters.config.webhooks import read_webhooks
from adapters.providers.base import Timeouts
from core.attempts import AttemptPolicy
from core.health import HealthPolicy


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
    providers = read_providers(file_cfg, env)
    mock_default = not providers
    mock_cfg = file_cfg.get("mock_mode", mock_default)
    mock = boolean(env["MOCK_MODE"], "MOCK_MODE") if "MOCK_MODE" in env else bool(mock_cfg)
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
            database_rollup_seconds=float(
                env.get("UMG_DB_ROLLUP_SECONDS") or file_cfg.get("database_rollup_seconds", 1.0)
            ),
            mock_mode=mock,
            providers=providers,
            catalog_overrides=file_cfg.get("catalog", {}),
            limits=read_limits(file_cfg, env),
            jobs=read_jobs(file_cfg),
            webhooks=read_webhooks(file_cfg, env),
            streams=read_streams(file_cfg, env),
            metrics=read_metrics(file_cfg, env),
            request_log=flag(server, "request_log", True, env, "UMG_REQUEST_LOG"),
            tracing=read_tracing(file_cfg, env),
            attempts=AttemptPolicy(**table(file_cfg, "attempts", AttemptPolicy)),
            timeouts=Timeouts(**table(file_cfg, "timeouts", Timeouts)),
            health=HealthPolicy(**table(file_cfg, "health", HealthPolicy)),
            idempotency=read_idempotency(file_cfg, env),
            budgets=read_budgets(file_cfg),
            retention=read_retention(file_cfg, env),
            log_level=str(env.get("LOG_LEVEL") or server.get("log_level", "info")).lower(),
            third_party_log_level=str(
                env.get("UMG_THIRD_PARTY_LOG_LEVEL") or server.get("third_party_log_level", "warning")
            ).lower(),
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid configuration: {err}") from None
