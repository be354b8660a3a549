"""The JSON log format (adapters/telemetry.py): `emit`'s one-dict records and plain
`extra` records give the same kind of line; redaction reaches nested fields; non-ASCII
text is kept as it is."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest

from adapters.telemetry import JsonFormatter, configure_logging, emit, redact

Written = Callable[[], list[dict[str, object]]]


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


@pytest.fixture
def installed(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[dict[str, object]]]]:
    """`configure_logging` as `umg serve` calls it, on the captured stdout (called in the
    test: pytest adds its own handlers to the root logger after the fixtures), and the
    lines it wrote; the root logger put back afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        yield lambda: [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def _fields() -> dict[str, object]:
    return {"event": "request", "cost_usd": "0.5", "error": "bad key sk-ant-api03-0123456789abcdef",
            "attempts": [{"outcome": "ok", "next": "answered"}]}


def test_emit_to_the_installed_handler_makes_no_record(installed: Written, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_record(*args: object, **kwargs: object) -> logging.LogRecord:
        raise AssertionError("a LogRecord was made")

    configure_logging("info")
    monkeypatch.setattr(logging.Logger, "makeRecord", no_record)
    emit(logging.getLogger("umg.request"), logging.WARNING, "request error responses", _fields())
    (line,) = installed()
    assert (line["level"], line["logger"], line["message"]) == ("warning", "umg.request", "request error responses")
    assert line["error"] == "bad key [redacted]"  # redacted on this way too
    assert line["attempts"] == [{"outcome": "ok", "next": "answered"}]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(line["time"]))


def test_the_installed_handler_writes_the_line_a_record_would(installed: Written) -> None:
    configure_logging("info")
    logger = logging.getLogger("umg.request")
    emit(logger, logging.INFO, "request ok responses", _fields())  # no record
    seen: list[logging.LogRecord] = []
    other = logging.Handler()
    other.emit = seen.append  # type: ignore[method-assign,assignment]
    logger.addHandler(other)  # now two handlers: a record through logging, for both
    try:
        emit(logger, logging.INFO, "request ok responses", _fields())
    finally:
        logger.removeHandler(other)
    direct, recorded = installed()
    assert len(seen) == 1
    assert {k: v for k, v in direct.items() if k != "time"} == {k: v for k, v in recorded.items() if k != "time"}


def test_a_filter_or_a_level_on_the_way_is_obeyed(installed: Written) -> None:
    configure_logging("info")
    logger = logging.getLogger("umg.request")
    handler = logging.getLogger().handlers[0]
    logger.addFilter(lambda record: False)
    try:
        emit(logger, logging.INFO, "filtered", _fields())
    finally:
        logger.filters.clear()
    handler.setLevel(logging.ERROR)
    try:
        emit(logger, logging.WARNING, "below the handler's level", _fields())
    finally:
        handler.setLevel(logging.NOTSET)
    assert installed() == []


def test_the_time_is_stamped_to_the_millisecond_across_seconds() -> None:
    formatter = JsonFormatter()
    assert formatter.stamp(1_700_000_000.5) == "2023-11-14T22:13:20.500Z"
    assert formatter.stamp(1_700_000_000.875) == "2023-11-14T22:13:20.875Z"
    assert formatter.stamp(1_700_000_001.25) == "2023-11-14T22:13:21.250Z"
    record = logging.makeLogRecord({"name": "umg.x", "levelno": logging.INFO, "levelname": "INFO", "msg": "m",
                                    "created": 1_700_000_061.0625})
    assert json.loads(formatter.format(record))["time"] == "2023-11-14T22:14:21.062Z"
