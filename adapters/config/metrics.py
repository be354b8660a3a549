"""`[metrics]`: counting requests and serving `GET /metrics`.

Owns: `MetricsSettings` and reading it from `[metrics]`, `UMG_METRICS` and
`UMG_METRICS_PUBLIC`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import frozen

from adapters.config.values import flag, table


@frozen
class MetricsSettings:
    enabled: bool = True  # count requests and answer GET /metrics (adapters/metrics.py)
    public: bool = False  # GET /metrics without an admin key


def read_metrics(file_cfg: Mapping[str, Any], env: Mapping[str, str]) -> MetricsSettings:
    """`[metrics]` (unknown keys refused), then `UMG_METRICS` and `UMG_METRICS_PUBLIC`."""
    section = table(file_cfg, "metrics", MetricsSettings)
    return MetricsSettings(
        enabled=flag(section, "enabled", True, env, "UMG_METRICS"),
        public=flag(section, "public", False, env, "UMG_METRICS_PUBLIC"),
    )
