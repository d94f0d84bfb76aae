"""Structured logs: one JSON object per line on stderr.

DELIBERATE COPY. The event relay (images/event-relay/src/event_relay/logs.py) and the LiteRT
server (images/litert-server/src/litert_server/jsonlog.py) ship as separate images that share no
package, so each carries this module; the two files are the same, byte for byte, so the two
images log in one format. Edit both; a test in each image checks the format and that the two
files are still the same.

A line: ``{"time":"2026-12-01T10:00:00.123Z","level":"info","logger":"...","msg":"...", ...}``:
``time`` is ISO 8601 UTC with milliseconds; then the record's extra fields, sorted by name, given
as ``extra={"model": "m"}`` or ``extra=fields(model="m")``; then ``exc`` (the traceback) when the
record carries an exception. An extra field named like one of those is written as ``field_<name>``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

FIXED = ("time", "level", "logger", "msg", "exc")
# What every LogRecord has, so is not an extra field ("fields" holds those given with fields()).
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName", "fields"}


def iso_time(record: logging.LogRecord) -> str:
    """The record's time, ISO 8601 UTC with milliseconds (2026-12-01T10:00:00.123Z)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record was given with ``extra=``, both ways."""
    found = {key: value for key, value in vars(record).items() if key not in _STANDARD and not key.startswith("_")}
    given = getattr(record, "fields", None)
    if isinstance(given, dict):
        found.update(given)
    return found


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": iso_time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = extra_fields(record)
        for key in sorted(extra, key=str):
            entry[f"field_{key}" if key in FIXED else str(key)] = extra[key]
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def setup(level: str = "info") -> None:
    """Log to stderr, one JSON object per line, from ``level`` up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def fields(**values: Any) -> dict[str, Any]:
    """``log.info("msg", extra=fields(a=1))``, the same as ``extra={"a": 1}``."""
    return {"fields": values}
