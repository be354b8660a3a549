"""`[limits]`: request sizes, slow clients, upstream connections and default key limits.

Owns: `LimitSettings`, what each of its values may be (checked when it is made, so a
bad value is a `ConfigError` from `load_settings`), and reading it from `[limits]` and
the `UMG_*` variables that override that section.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import field, frozen

from adapters.config.values import flag


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


def read_limits(file_cfg: Mapping[str, Any], env: Mapping[str, str]) -> LimitSettings:
    """`[limits]`, then `UMG_BUDGET_SLICES`, `UMG_HEADER_TIMEOUT_SECONDS`,
    `UMG_BODY_TIMEOUT_SECONDS` and `UMG_BODY_BUDGET_BYTES`. A bad value raises
    TypeError or ValueError (`load_settings` makes it a `ConfigError`)."""
    limits = file_cfg.get("limits", {})
    return LimitSettings(
        default_rpm=limits.get("default_rpm"),
        default_tpm=limits.get("default_tpm"),
        budget_slices=flag(limits, "budget_slices", True, env, "UMG_BUDGET_SLICES"),
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
    )
