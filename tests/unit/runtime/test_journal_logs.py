"""Under systemd, log records become journal entries whose fields an operator can search."""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

from daemon.core.envelope import trace_id_var
from daemon.runtime.logs import encode_journal_entry, journal_fields, stderr_is_journal


def _record(msg: str, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    record = logging.getLogger("democratic_ai.pipeline").makeRecord(
        "democratic_ai.pipeline", level, "/opt/democratic-ai/pipeline.py", 7, msg, (), None, func="call", extra=extra)
    return record


def test_a_failed_call_is_searchable_by_trace_tenant_action_module_peer_and_code() -> None:
    fields = journal_fields(_record("call failed", code="RATE_LIMITED", action="text.summarize", tenant_id="t-1",
                                    module_id="summarizer", peer="10.0.0.7", trace_id="abc123", door="http"))
    assert {k: fields[k] for k in ("TRACE_ID", "TENANT", "ACTION", "MODULE", "PEER", "CODE")} == {
        "TRACE_ID": "abc123", "TENANT": "t-1", "ACTION": "text.summarize", "MODULE": "summarizer",
        "PEER": "10.0.0.7", "CODE": "RATE_LIMITED"}
    assert fields["MESSAGE"] == "call failed" and fields["PRIORITY"] == "6"
    assert fields["SYSLOG_IDENTIFIER"] == "democratic-ai" and fields["LOGGER"] == "democratic_ai.pipeline"
    assert fields["DOOR"] == "http"  # any other extra keeps its name, upper-cased
    assert (fields["CODE_FILE"], fields["CODE_LINE"], fields["CODE_FUNC"]) == (
        "/opt/democratic-ai/pipeline.py", "7", "call")


def test_the_trace_id_of_the_call_in_progress_and_structured_values() -> None:
    token = trace_id_var.set("trace-in-scope")
    try:
        fields = journal_fields(_record("modules reloaded", modules=["echo", "ocr"], **{"self-signed": True}))
    finally:
        trace_id_var.reset(token)
    assert fields["TRACE_ID"] == "trace-in-scope"
    assert fields["MODULES"] == '["echo", "ocr"]' and fields["SELF_SIGNED"] == "true"


def test_levels_map_to_syslog_priorities() -> None:
    priorities = {level: journal_fields(_record("x", level))["PRIORITY"]
                  for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)}
    assert priorities == {logging.DEBUG: "7", logging.INFO: "6", logging.WARNING: "4", logging.ERROR: "3",
                          logging.CRITICAL: "2"}


def test_a_traceback_goes_in_the_message_in_the_binary_safe_form() -> None:
    fields = journal_fields(_record("reload failed", logging.ERROR), exc_text="Traceback\n  boom")
    assert fields["MESSAGE"] == "reload failed\nTraceback\n  boom"
    entry = encode_journal_entry({"CODE": "INTERNAL", "MESSAGE": fields["MESSAGE"]})
    text = fields["MESSAGE"].encode()
    assert entry == b"CODE=INTERNAL\n" + b"MESSAGE\n" + struct.pack("<Q", len(text)) + text + b"\n"


def test_the_journal_is_used_only_when_stderr_is_its_stream(tmp_path: Path) -> None:
    stat = os.stat(tmp_path)
    assert stderr_is_journal({"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}, stat)
    # inherited by a process whose stderr was redirected elsewhere: JSON lines, as without systemd
    assert not stderr_is_journal({"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino + 1}"}, stat)
    assert not stderr_is_journal({}, stat)
    assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"}, stat)
