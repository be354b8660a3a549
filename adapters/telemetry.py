"""Telemetry: structured JSON logs on stdout, with secrets redacted on the way out.

Owns: the log format and where it goes. Every record is one JSON object per line on
stdout (time, level, logger, message, and any `extra` fields at the top level: the
request log's, adapters/request_log.py). Redaction replaces anything that looks like a
gateway key (`umg_live_...`) or a provider key (`sk-...`, `sk-ant-...`) with
`[redacted]` anywhere in the line (the message, every field, nested ones, a traceback),
so a key can never reach the logs, even through an upstream error message.
Third-party loggers (httpx and httpcore, one INFO line per HTTP call; hypercorn's access
and error logs) are held at `third_party` (default WARNING), whatever our level:
`--third-party-log-level` or `[server] third_party_log_level` change it.
OpenTelemetry's batch span processor warns once per span it drops when its queue is
full (while a collector is down, that is every span): it is held at ERROR; the OTLP
exporter's own warnings still say, once per batch, that the collector cannot be reached.

The request log's lines are the hot ones (one per request). `emit` hands their fields
as one dict that the formatter copies as it is, instead of setting each as a record
attribute and scanning them all. When the logger's lines can only reach the handler
`configure_logging` installs (`JsonLines`: the one handler on the way up, no filter on
the logger or on it), `emit` has it write the line from the fields directly, with no
`LogRecord` (whose making reads the thread, the process and its name, and splits a
path) and no walk through `Logger.handle`; the line is the same as the record's would
be. Any other setup (a test's handler, a filter, a second handler) gets a record through
`logging`, made without the caller lookup `Logger.log` does (a stack walk; the line names
its logger, not a source line). The time's text up to the second is made once per
second. Lines are encoded with msgspec (UTF-8: non-ASCII text is not escaped); each is
written and flushed in one write, under the handler's lock, as `StreamHandler` does.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import TextIO

import msgspec

from adapters.clock import epoch_seconds

SECRET = re.compile(r"(umg_live_[A-Za-z0-9_]+|sk-ant-[A-Za-z0-9_\-]+|sk-[A-Za-z0-9_\-]{16,})")
CHATTY_LOGGERS = ("httpx", "httpcore", "hypercorn.access", "hypercorn.error")
PER_ITEM_LOGGERS = ("opentelemetry.sdk._shared_internal",)
_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
FIELDS = "umg_fields"  # a record's fields as one dict (set by `emit`)
_ENCODER = msgspec.json.Encoder(enc_hook=str)  # anything it does not know is written as str()
_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error",
           logging.CRITICAL: "critical"}


def redact(text: str) -> str:
    # the substring tests are much cheaper than the pattern's scan, and every match holds one
    if "umg_live_" not in text and "sk-" not in text:
        return text
    return SECRET.sub("[redacted]", text)


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")  # the last second stamped, and its text

    def stamp(self, created: float) -> str:
        """`created` (epoch seconds) as the line's UTC time, to the millisecond."""
        second = int(created)
        known = self._second  # one read: another thread may replace it meanwhile
        if known[0] != second:
            known = self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return f"{known[1]}.{int((created - second) * 1000):03d}Z"

    def line(
        self, created: float, level: str, name: str, message: str, fields: dict[str, object],
        exception: str | None = None,
    ) -> str:
        """One line: the time, level, logger and message, then `fields` as they are."""
        entry: dict[str, object] = {"time": self.stamp(created), "level": level, "logger": name, "message": message}
        entry.update(fields)
        if exception:
            entry["exception"] = exception
        # one pass over the whole line: every string in it, nested ones too (a key has no
        # character JSON escapes, and "[redacted]" needs no escaping)
        return redact(_ENCODER.encode(entry).decode())

    def format(self, record: logging.LogRecord) -> str:
        fields = record.__dict__.get(FIELDS)
        if fields is None:
            fields = {key: value for key, value in vars(record).items()
                      if key not in _STANDARD and not key.startswith("_")}
        exception = self.formatException(record.exc_info) if record.exc_info else None
        return self.line(record.created, record.levelname.lower(), record.name, record.getMessage(), fields, exception)


class JsonLines(logging.StreamHandler[TextIO]):
    """The handler `configure_logging` installs: JSON lines on a stream. `write_fields`
    writes one from its fields, with no `LogRecord` (`emit`'s way when this is the only
    handler its logger reaches)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.setFormatter(JsonFormatter())

    def write_fields(self, name: str, level: int, message: str, fields: dict[str, object]) -> None:
        formatter = self.formatter
        assert isinstance(formatter, JsonFormatter)
        created = epoch_seconds()
        text = formatter.line(created, _level_name(level), name, message, fields) + self.terminator
        self.acquire()
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or failing stream: told as logging tells it
            record = logging.makeLogRecord({"name": name, "levelno": level, "msg": message, "created": created})
            record.__dict__[FIELDS] = fields
            self.handleError(record)
        finally:
            self.release()


def _level_name(level: int) -> str:
    return _LEVELS.get(level) or logging.getLevelName(level).lower()


def _only_json_lines(logger: logging.Logger) -> JsonLines | None:
    """The `JsonLines` handler that is the only one `logger`'s records reach, with no
    filter on the way (`Logger.handle` applies the logger's own, `Handler.handle` the
    handler's) and its formatter ours; else None (a record must go through `logging`)."""
    if logger.filters or logger.disabled:
        return None
    found: JsonLines | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None or type(handler) is not JsonLines or handler.filters:
                return None
            found = handler
        current = current.parent if current.propagate else None
    if found is None or type(found.formatter) is not JsonFormatter:
        return None
    return found


def emit(logger: logging.Logger, level: int, message: str, fields: dict[str, object]) -> None:
    """One line at `level` (if `logger` lets it through) with `fields` at its top level."""
    if not logger.isEnabledFor(level):
        return
    lines = _only_json_lines(logger)
    if lines is not None:
        if level >= lines.level:
            lines.write_fields(logger.name, level, message, fields)
        return
    record = logger.makeRecord(logger.name, level, "", 0, message, (), None)
    record.__dict__[FIELDS] = fields
    logger.handle(record)


def configure_logging(level: str = "info", third_party: str = "warning") -> None:
    handler = JsonLines(sys.stdout)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.getLevelName(third_party.upper()), root.level))
    for name in PER_ITEM_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.ERROR, root.level))
