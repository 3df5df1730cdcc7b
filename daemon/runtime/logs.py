"""Structured logs; every record about a request carries its trace_id.

Under systemd (stderr is the journal's stream, as ``$JOURNAL_STREAM`` says) each record goes to
journald natively, with its fields (TRACE_ID, TENANT, ACTION, MODULE, PEER, CODE) searchable:
``journalctl -u democratic-ai TRACE_ID=...``.  Anywhere else: one JSON object a line on stderr.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import struct
import sys
import time
from collections.abc import Mapping
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


#: journald's socket for the native protocol (systemd.journal-fields(7), "native protocol")
JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_IDENTIFIER = "democratic-ai"
#: the journal field each ``extra`` key the hub logs with is searched by; other keys are upper-cased
JOURNAL_FIELDS = {"trace_id": "TRACE_ID", "tenant": "TENANT", "tenant_id": "TENANT", "action": "ACTION",
                  "module": "MODULE", "module_id": "MODULE", "peer": "PEER", "peer_id": "PEER", "code": "CODE"}
#: syslog priorities, as journald stores them (PRIORITY=)
_PRIORITIES = ((logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3))
_NOT_A_FIELD_CHAR = re.compile(r"[^A-Z0-9_]")


def _field_name(key: str) -> str | None:
    """``key`` as a journal field name: A-Z, 0-9 and _, not starting with _ or a digit, at most 64 bytes."""
    name = _NOT_A_FIELD_CHAR.sub("_", key.upper()).lstrip("_")[:64]
    if not name:
        return None
    return name if not name[0].isdigit() else f"X_{name}"[:64]


def journal_fields(record: logging.LogRecord, exc_text: str | None = None) -> dict[str, str]:
    """The journal entry for ``record``: MESSAGE, PRIORITY, the source, the trace id and every ``extra``."""
    fields: dict[str, str] = {}
    for key, value in vars(record).items():
        if key in _STANDARD:
            continue
        name = JOURNAL_FIELDS.get(key) or _field_name(key)
        if name is not None and value is not None:
            fields[name] = value if isinstance(value, str) else json.dumps(value, default=str)
    trace_id = getattr(record, "trace_id", None) or trace_id_var.get()
    if trace_id:
        fields["TRACE_ID"] = str(trace_id)
    message = record.getMessage()
    fields.update({
        "MESSAGE": f"{message}\n{exc_text}" if exc_text else message,
        "PRIORITY": str(next((p for level, p in _PRIORITIES if record.levelno <= level), 2)),
        "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
        "LOGGER": record.name,
        "CODE_FILE": record.pathname,
        "CODE_LINE": str(record.lineno),
        "CODE_FUNC": record.funcName,
    })
    return fields


def encode_journal_entry(fields: Mapping[str, str]) -> bytes:
    """The native protocol's datagram: ``KEY=value`` lines; a value with a newline as KEY, length, bytes."""
    parts = []
    for name, value in fields.items():
        data = value.encode("utf-8", "backslashreplace")
        if b"\n" in data:
            parts.append(name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            parts.append(name.encode() + b"=" + data + b"\n")
    return b"".join(parts)


def stderr_is_journal(environ: Mapping[str, str], stderr: os.stat_result | None) -> bool:
    """True when stderr is the stream systemd connected to journald (``$JOURNAL_STREAM`` is "dev:inode")."""
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if stderr is None or not device.isdigit() or not inode.isdigit():
        return False
    return (stderr.st_dev, stderr.st_ino) == (int(device), int(inode))


class JournalHandler(logging.Handler):
    """Sends each record to journald as one native-protocol datagram, its fields searchable.

    A record the journal does not take (too large for one datagram, journald away) goes to
    ``fallback`` instead, a JSON line on stderr, which the journal's stream still collects.
    """

    def __init__(self, fallback: logging.Handler, path: str = JOURNAL_SOCKET) -> None:
        super().__init__()
        self.fallback = fallback
        self.path = path
        self._sock: socket.socket | None = None

    def emit(self, record: logging.LogRecord) -> None:
        """Send ``record``'s entry; on any socket error hand it to the fallback handler."""
        try:
            exc_text = self.formatter.formatException(record.exc_info) if self.formatter and record.exc_info \
                else None
            entry = encode_journal_entry(journal_fields(record, exc_text))
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(entry, self.path)
        except OSError:
            self.fallback.handle(record)
        except Exception:  # a record that cannot be encoded: reported as logging reports, never raised
            self.handleError(record)

    def close(self) -> None:
        """Close the socket and the fallback handler."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.fallback.close()
        super().close()


def setup_logging(level: str = "INFO", as_json: bool = True) -> None:
    """Replace the root handlers with one: journald under systemd, else stderr (JSON lines or plain text).

    aiohttp's per-request access log is cut to WARNING.
    """
    stream = logging.StreamHandler(sys.stderr)
    plain = TraceFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    stream.setFormatter(JsonFormatter() if as_json else plain)
    handler: logging.Handler = stream
    try:
        stderr_stat: os.stat_result | None = os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # no real file behind sys.stderr
        stderr_stat = None
    if stderr_is_journal(os.environ, stderr_stat):
        handler = JournalHandler(fallback=stream)
        handler.setFormatter(logging.Formatter())  # only formats the traceback of log.exception
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is one line per request: too hot for a small box, and the hub logs its own
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
