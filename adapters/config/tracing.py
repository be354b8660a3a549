"""`[tracing]` and the standard `OTEL_*` variables: where spans go, and their batches.

Owns: `TracingSettings` and reading it: which exporters (none means tracing is off),
the OTLP endpoint, whether prompts and answers are captured, and the batch sizes
(`OTEL_BSP_*`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import frozen

from adapters.config.values import ConfigError, boolean, table

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


def read_tracing(file_cfg: Mapping[str, Any], env: Mapping[str, str]) -> TracingSettings:
    """`[tracing]` (exporter, endpoint, capture_content), then the standard variables:
    `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the traces URL as it is) or
    `OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/traces`) turn OTLP on; `OTEL_TRACES_EXPORTER`
    (comma-separated `otlp`, `console`, `none`) chooses explicitly; `OTEL_SDK_DISABLED=true`
    turns tracing off; `UMG_TRACE_CAPTURE_CONTENT` or the GenAI instrumentations'
    `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` switch content capture;
    `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`
    size the batches."""
    section = table(file_cfg, "tracing", _TracingFile)
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
    if "OTEL_SDK_DISABLED" in env and boolean(env["OTEL_SDK_DISABLED"], "OTEL_SDK_DISABLED"):
        names = ()
    capture = section.get("capture_content", False)
    if not isinstance(capture, bool):
        raise ConfigError("tracing.capture_content must be true or false")
    for name in ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "UMG_TRACE_CAPTURE_CONTENT"):
        if name in env:
            capture = boolean(env[name], name)
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
