"""Telemetry: structured JSON logs, with secrets redacted on the way out.

Owns: the log format. Every record is one JSON object per line (time, level, logger,
message, and any `extra` fields). A redaction filter replaces anything that looks like a
gateway key (`umg_live_...`) or a provider key (`sk-...`, `sk-ant-...`) with `[redacted]`,
so a key can never reach the logs, even through an upstream error message.
Third-party loggers that would log one INFO line per HTTP call (httpx, used for webhook
deliveries) are held at WARNING whatever the level.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

SECRET = re.compile(r"(umg_live_[A-Za-z0-9_]+|sk-ant-[A-Za-z0-9_\-]+|sk-[A-Za-z0-9_\-]{16,})")
CHATTY_LOGGERS = ("httpx", "httpcore")
_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def redact(text: str) -> str:
    return SECRET.sub("[redacted]", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
