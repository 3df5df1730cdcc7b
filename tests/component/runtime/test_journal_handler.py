"""The journal handler against a socket standing in for journald's: one entry a record, or the fallback."""

from __future__ import annotations

import io
import json
import logging
import socket
import struct
from pathlib import Path

from daemon.runtime.logs import JournalHandler, JsonFormatter


def _parse(entry: bytes) -> dict[str, str]:
    """journald's side of the native protocol."""
    fields, rest = {}, entry
    while rest:
        line, _, rest = rest.partition(b"\n")
        if b"=" in line:
            name, _, value = line.partition(b"=")
            fields[name.decode()] = value.decode()
        else:
            (size,) = struct.unpack("<Q", rest[:8])
            fields[line.decode()] = rest[8:8 + size].decode()
            rest = rest[8 + size + 1:]
    return fields


def _handler(path: Path) -> tuple[JournalHandler, io.StringIO]:
    lines = io.StringIO()
    fallback = logging.StreamHandler(lines)
    fallback.setFormatter(JsonFormatter())
    handler = JournalHandler(fallback=fallback, path=str(path))
    handler.setFormatter(logging.Formatter())
    return handler, lines


def test_each_record_is_one_journal_entry_with_its_fields(tmp_path: Path) -> None:
    log = logging.getLogger("democratic_ai.test_journal")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as journald:
        journald.bind(str(tmp_path / "journal.sock"))
        journald.settimeout(30)
        handler, lines = _handler(tmp_path / "journal.sock")
        try:
            log.addHandler(handler)
            try:
                raise ValueError("the model file is truncated")
            except ValueError:
                log.exception("module failed to start", extra={"module_id": "ocr", "code": "INTERNAL"})
        finally:
            log.removeHandler(handler)
            handler.close()
        entry = _parse(journald.recv(1 << 20))
    assert (entry["MODULE"], entry["CODE"], entry["PRIORITY"]) == ("ocr", "INTERNAL", "3")
    assert entry["MESSAGE"].startswith("module failed to start\nTraceback")
    assert "ValueError: the model file is truncated" in entry["MESSAGE"]
    assert lines.getvalue() == ""


def test_without_journald_the_record_is_a_json_line_on_stderr(tmp_path: Path) -> None:
    log = logging.getLogger("democratic_ai.test_journal")
    handler, lines = _handler(tmp_path / "nobody-listens.sock")
    log.addHandler(handler)
    try:
        log.warning("hub ready", extra={"module_id": "echo"})
    finally:
        log.removeHandler(handler)
        handler.close()
    line = json.loads(lines.getvalue())
    assert (line["msg"], line["module_id"], line["level"]) == ("hub ready", "echo", "WARNING")
