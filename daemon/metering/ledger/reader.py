"""Read a site's ledger for syncing and export: the rows after a seq, and the head.

Read-only (``connect_ro``): a site's sync outbox and the CLI read beside the one writer, in
this process or another, and nothing here can change the file.  A site with no ledger yet
has nothing to send: an empty list and a head of ``(0, 0)``, not an error.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from daemon.metering.ledger.chain import SELECT, connect_ro, read_head
from daemon.metering.ledger.rows import LedgerRow

__all__ = ["MAX_READ_ROWS", "ledger_head", "rows_after"]

#: the most rows one read returns; a sync batch is far smaller (federation's MAX_BATCH_ROWS)
MAX_READ_ROWS = 100_000


def rows_after(ledger_path: str | Path, seq: int, limit: int) -> list[LedgerRow]:
    """Up to ``limit`` entries with a seq above ``seq``, in seq order (``[]`` without a ledger file)."""
    if not 1 <= limit <= MAX_READ_ROWS:
        raise ValueError(f"limit must be 1..{MAX_READ_ROWS}, not {limit}")
    if not Path(ledger_path).is_file():
        return []
    with contextlib.closing(connect_ro(ledger_path)) as conn:
        cursor = conn.execute(f"{SELECT} WHERE seq > ? ORDER BY seq LIMIT ?", (max(0, seq), limit))
        return [LedgerRow._make(row) for row in cursor]


def ledger_head(ledger_path: str | Path) -> tuple[int, int]:
    """``(seq, ts_us)`` of the last committed entry; ``(0, 0)`` before the first or without a file."""
    if not Path(ledger_path).is_file():
        return 0, 0
    with contextlib.closing(connect_ro(ledger_path)) as conn:
        head = read_head(conn)
    return head.seq, head.ts_us
