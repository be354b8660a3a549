"""The JSON log format (adapters/telemetry.py): `emit`'s one-dict records and plain
`extra` records give the same kind of line; redaction reaches nested fields; non-ASCII
text is kept as it is."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from decimal import Decimal

import pytest

from adapters.telemetry import JsonFormatter, emit, redact


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("umg.test_json_log")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_emit_writes_its_fields_at_the_top_level(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = captured
    emit(logger, logging.WARNING, "request error responses", {
        "event": "request", "status": "error", "cost_usd": Decimal("0.5"),
        "attempts": [{"outcome": "server_error", "error": "bad key umg_live_abcdefghijklmnop"}],
    })  # fmt: skip
    (line,) = lines(out)
    assert line["level"] == "warning" and line["logger"] == "umg.test_json_log"
    assert line["message"] == "request error responses"
    assert (line["event"], line["status"], line["cost_usd"]) == ("request", "error", "0.5")
    assert line["attempts"] == [{"outcome": "server_error", "error": "bad key [redacted]"}]
    assert str(line["time"]).endswith("Z")


def test_emit_below_the_level_writes_nothing(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = captured
    emit(logger, logging.DEBUG, "quiet", {"event": "request"})
    assert out.getvalue() == ""


def test_extra_fields_and_non_ascii_text(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = captured
    logger.info("modèle %s", "débranché", extra={"detail": "größe ✓", "key": "sk-ant-api03-0123456789abcdef"})
    (line,) = lines(out)
    assert line["message"] == "modèle débranché"
    assert (line["detail"], line["key"]) == ("größe ✓", "[redacted]")


@pytest.mark.parametrize(
    "text", ["umg_live_abc123_def", "sk-ant-api03-xyz", "sk-proj-0123456789abcdefgh", "x sk-0123456789abcdefgh y"]
)
def test_redact_replaces_every_key_shape(text: str) -> None:
    assert "[redacted]" in redact(text)
    assert redact("plain text, sk- but short, umg_live") == "plain text, sk- but short, umg_live"
