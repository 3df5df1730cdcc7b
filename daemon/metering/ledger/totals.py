"""Reads of a ledger file that any process may make while the writer runs: totals and balances.

Every function opens its own read-only connection (WAL lets it read beside the writer and a
CLI in another process), so they are synchronous: the loop calls them through
``asyncio.to_thread``, the CLI calls them directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from daemon.core.envelope import Receipt
from daemon.metering.ledger.chain import connect_ro

__all__ = ["UsageTotals", "find_receipt", "read_balance", "read_totals"]


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Sums of a tenant's usage events in [start, end)."""

    tenant_id: str
    events: int
    api_calls: int
    compute_ms: float
    bytes_in: int
    bytes_out: int
    units: dict[str, float]
    credits_debited: Decimal
    credits_topped_up: Decimal
    first_seq: int | None
    last_seq: int | None


def _us(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("period boundaries must be timezone-aware")
    return round(moment.timestamp() * 1_000_000)


def read_totals(path: str | Path, tenant_id: str, start: datetime, end: datetime) -> UsageTotals:
    """Sum a tenant's usage in [start, end) straight from the file (sync: CLI, or a worker thread)."""
    args = (tenant_id, _us(start), _us(end))
    where = "tenant_id = ? AND ts_us >= ? AND ts_us < ?"
    conn = connect_ro(path)
    try:
        n, calls, cms, b_in, b_out, first, last = conn.execute(
            "SELECT count(*), total(api_calls), total(compute_ms), total(bytes_in), total(bytes_out),"
            f" min(seq), max(seq) FROM events WHERE {where} AND kind = 'usage'", args).fetchone()
        units = dict(conn.execute(
            "SELECT j.key, total(j.value) FROM events, json_each(events.units) AS j"
            f" WHERE {where} AND kind = 'usage' GROUP BY j.key ORDER BY j.key", args).fetchall())
        debited, topped = Decimal(0), Decimal(0)
        for (text,) in conn.execute(f"SELECT credits FROM events WHERE {where} AND credits != '0'", args):
            amount = Decimal(text)
            if amount < 0:
                debited -= amount
            else:
                topped += amount
    finally:
        conn.close()
    return UsageTotals(tenant_id, n, int(calls), cms, int(b_in), int(b_out), units, debited, topped,
                       first, last)


def read_balance(path: str | Path, tenant_id: str) -> Decimal | None:
    """One tenant's credit balance straight from the file; None: the tenant is not prepaid."""
    conn = connect_ro(path)
    try:
        row = conn.execute("SELECT balance FROM credit_balances WHERE tenant_id = ?", (tenant_id,)).fetchone()
    finally:
        conn.close()
    return Decimal(row[0]) if row else None


def find_receipt(path: str | Path, event_id: str) -> Receipt | None:
    """The committed entry of ``event_id``, or None: how a new writer learns which of the events
    sent to a writer that died were committed before it died."""
    conn = connect_ro(path)
    try:
        row = conn.execute("SELECT seq, hash FROM events WHERE event_id = ?", (event_id,)).fetchone()
    finally:
        conn.close()
    return Receipt(row[0], row[1]) if row else None
