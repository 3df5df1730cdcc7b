"""The ledger's rows as typed records: one ``events`` row, and the ``head`` row that anchors the tail.

The fields are the table's columns, in the table's order, so a row read from SQLite becomes a
``LedgerRow`` with ``LedgerRow._make(row)`` and a ``LedgerRow`` is written as it is (it is a
tuple): nothing reads a column by its position.  A row is also msgpack- and JSON-able as it
stands (an array in column order), and ``to_dict``/``from_dict`` give the named form, for
shipping rows to another site without a second definition of the columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple


class LedgerRow(NamedTuple):
    """One entry of the ``events`` table, exactly as stored (no type conversion on the way in or out)."""

    seq: int  # 1, 2, 3 ... assigned by the one writer
    event_id: str  # UUID; a replayed event cannot be billed twice
    kind: str  # "usage" | "top_up" | "account" | "served" (run for a fleet peer)
    tenant_id: str
    subject: str  # opaque "user:<id>" / "key:<prefix>", never an email
    plan: str
    action: str
    module: str
    api_calls: int
    compute_ms: float
    bytes_in: int
    bytes_out: int
    units: str  # canonical JSON object of model units
    credits: str  # Decimal delta as text: "-0.05" debit, "1000" top-up, "0"
    ts_us: int  # wall clock, microseconds UTC, never decreasing along the chain
    trace_id: str
    prev_hash: str  # the previous entry's hash; GENESIS for the first
    hash: str  # sha256(prev_hash + canonical JSON of the hashed fields)

    @property
    def hashed(self) -> tuple[Any, ...]:
        """The fields the entry's hash covers, in hashing order: every column but the two hashes."""
        return tuple(self[:HASHED_COUNT])

    def to_dict(self) -> dict[str, Any]:
        """The row by column name, in column order."""
        return self._asdict()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LedgerRow:
        """The row from its named form; KeyError names a missing column, extra keys are refused."""
        extra = set(data) - set(cls._fields)
        if extra:
            raise ValueError(f"not ledger columns: {sorted(extra)}")
        return cls._make(data[name] for name in cls._fields)


#: every column of ``events``, in table order
COLUMNS: tuple[str, ...] = LedgerRow._fields
#: how many leading columns the hash covers (all but prev_hash and hash)
HASHED_COUNT = len(COLUMNS) - 2


class LedgerHead(NamedTuple):
    """The single ``head`` row: the last committed entry, written in the same transaction as it."""

    seq: int  # 0 before the first entry
    hash: str  # that entry's hash; GENESIS before the first
    ts_us: int
