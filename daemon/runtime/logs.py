"""Structured JSON logs; every line about a request carries its trace_id."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from daemon.core.envelope import trace_id_var

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts (UTC, ms), level, logger, msg, trace_id, every ``extra`` key, exc."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line; values JSON cannot encode are written as str()."""
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", None) or trace_id_var.get()
        if trace_id:
            line["trace_id"] = trace_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "trace_id":
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TraceFormatter(logging.Formatter):
    """Plain text for a terminal (log.json = false), with `` trace_id=`` appended inside a call."""

    def format(self, record: logging.LogRecord) -> str:
        """The usual line, plus the current task's trace id when it has one."""
        text = super().format(record)
        trace_id = trace_id_var.get()
        return f"{text} trace_id={trace_id}" if trace_id else text


def setup_logging(level: str = "INFO", as_json: bool = True) -> None:
    """Replace the root handlers with one on stderr; aiohttp's per-request access log is cut to WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    plain = TraceFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(JsonFormatter() if as_json else plain)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is one line per request: too hot for a small box, and the hub logs its own
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
