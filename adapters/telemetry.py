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

The request log's lines are the hot ones (one per request): `emit` makes their record
without the caller lookup `Logger.log` does (a stack walk; the line names its logger,
not a source line), and hands the fields as one dict (`FIELDS`) that the formatter
copies as it is, instead of setting each as a record attribute and scanning them all.
Lines are encoded with msgspec (UTF-8: non-ASCII text is not escaped).
"""

from __future__ import annotations

import logging
import re
import sys
import time

import msgspec

SECRET = re.compile(r"(umg_live_[A-Za-z0-9_]+|sk-ant-[A-Za-z0-9_\-]+|sk-[A-Za-z0-9_\-]{16,})")
CHATTY_LOGGERS = ("httpx", "httpcore", "hypercorn.access", "hypercorn.error")
PER_ITEM_LOGGERS = ("opentelemetry.sdk._shared_internal",)
_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
FIELDS = "umg_fields"  # a record's fields as one dict (set by `emit`)
_ENCODER = msgspec.json.Encoder(enc_hook=str)  # anything it does not know is written as str()


def redact(text: str) -> str:
    # the substring tests are much cheaper than the pattern's scan, and every match holds one
    if "umg_live_" not in text and "sk-" not in text:
        return text
    return SECRET.sub("[redacted]", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__.get(FIELDS)
        if fields is not None:
            entry.update(fields)
        else:
            for key, value in vars(record).items():
                if key not in _STANDARD and not key.startswith("_"):
                    entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # one pass over the whole line: every string in it, nested ones too (a key has no
        # character JSON escapes, and "[redacted]" needs no escaping)
        return redact(_ENCODER.encode(entry).decode())


def emit(logger: logging.Logger, level: int, message: str, fields: dict[str, object]) -> None:
    """One line at `level` (if `logger` lets it through) with `fields` at its top level."""
    if not logger.isEnabledFor(level):
        return
    record = logger.makeRecord(logger.name, level, "", 0, message, (), None)
    record.__dict__[FIELDS] = fields
    logger.handle(record)


def configure_logging(level: str = "info", third_party: str = "warning") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.getLevelName(third_party.upper()), root.level))
    for name in PER_ITEM_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.ERROR, root.level))
