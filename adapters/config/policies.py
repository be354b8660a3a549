"""`[idempotency]`, `[retention]` and `[streams]`: sections whose settings types live elsewhere.

Owns: reading these sections, and the `UMG_*` variables that override them, into
`core.idempotency.Policy`, `core.retention.RetentionPolicy` and
`adapters.stream_log.StreamSettings` (which check their own values).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.config.values import ConfigError, boolean, table
from adapters.stream_log import StreamSettings
from core import idempotency
from core.retention import RetentionPolicy


def read_idempotency(file_cfg: Mapping[str, Any], env: Mapping[str, str]) -> idempotency.Policy:
    """`[idempotency]` (`ttl_seconds`, `lock_seconds`, `retry_after`), then
    `UMG_IDEMPOTENCY_TTL_SECONDS` and `UMG_IDEMPOTENCY_LOCK_SECONDS`."""
    section = table(file_cfg, "idempotency", idempotency.Policy)
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


def read_retention(file_cfg: Mapping[str, Any], env: Mapping[str, str]) -> RetentionPolicy:
    """`[retention]` (unknown keys refused), then one `UMG_RETENTION_*` variable per key."""
    section = table(file_cfg, "retention", RetentionPolicy)
    for name, var, kind in RETENTION_ENV:
        if var in env:
            try:
                section[name] = kind(env[var])
            except ValueError:
                what = "a whole number" if kind is int else "a number"
                raise ConfigError(f"{var} must be {what}, not {env[var]!r}") from None
    return RetentionPolicy(**section)


def read_streams(file_cfg: Mapping[str, Any], env: Mapping[str, str]) -> StreamSettings:
    """`[streams]` (unknown keys refused), then `UMG_STREAM_BUFFER` and
    `UMG_STREAM_RETENTION_SECONDS`."""
    section = table(file_cfg, "streams", StreamSettings)
    if "UMG_STREAM_BUFFER" in env:
        section["buffer"] = boolean(env["UMG_STREAM_BUFFER"], "UMG_STREAM_BUFFER")
    if "UMG_STREAM_RETENTION_SECONDS" in env:
        section["retention_seconds"] = float(env["UMG_STREAM_RETENTION_SECONDS"])
    if not isinstance(section.get("buffer", True), bool):
        raise ConfigError("streams.buffer must be true or false")
    return StreamSettings(**section)
