"""LedgerRow: the table's columns by name, and its named and packed forms round-trip exactly."""

from __future__ import annotations

import json
import sqlite3

import msgpack
import pytest

from daemon.metering.ledger.chain import FIELDS, GENESIS, INSERT, SCHEMA, SELECT, entry_hash, read_head
from daemon.metering.ledger.rows import COLUMNS, LedgerHead, LedgerRow

VALUES = (1, "00000000-0000-4000-8000-000000000001", "usage", "t1", "key:abc123", "starter", "echo", "echo",
          1, 12.5, 100, 200, '{"audio_s":1.5}', "-0.05", 1_700_000_000_000_000, "trace-1")
ROW = LedgerRow(*VALUES, GENESIS, entry_hash(GENESIS, VALUES))


def test_columns_are_the_tables_columns_in_order() -> None:
    conn = sqlite3.connect(":memory:")
    conn.executescript(SCHEMA)
    assert tuple(name for _, name, *_ in conn.execute("PRAGMA table_info(events)")) == COLUMNS
    assert FIELDS == COLUMNS[:-2] and COLUMNS[-2:] == ("prev_hash", "hash")


def test_a_row_round_trips_through_sqlite() -> None:
    conn = sqlite3.connect(":memory:")
    conn.executescript(SCHEMA)
    conn.execute(INSERT, ROW)
    conn.execute("UPDATE head SET seq = ?, hash = ?, ts_us = ?", (ROW.seq, ROW.hash, ROW.ts_us))
    (read,) = map(LedgerRow._make, conn.execute(f"{SELECT} ORDER BY seq"))
    assert read == ROW and type(read) is LedgerRow
    assert read_head(conn) == LedgerHead(1, ROW.hash, 1_700_000_000_000_000)


def test_the_named_form_round_trips() -> None:
    data = ROW.to_dict()
    assert list(data) == list(COLUMNS)
    assert data["tenant_id"] == "t1" and data["hash"] == ROW.hash
    assert LedgerRow.from_dict(data) == ROW
    assert LedgerRow.from_dict(json.loads(json.dumps(data))) == ROW


def test_the_packed_form_round_trips() -> None:
    packed = msgpack.packb(ROW)  # a NamedTuple packs as an array in column order
    assert LedgerRow._make(msgpack.unpackb(packed)) == ROW


def test_from_dict_refuses_missing_and_unknown_columns() -> None:
    data = ROW.to_dict()
    with pytest.raises(ValueError, match="not ledger columns"):
        LedgerRow.from_dict({**data, "balance": "1"})
    del data["prev_hash"]
    with pytest.raises(KeyError):
        LedgerRow.from_dict(data)


def test_hashed_is_every_column_but_the_two_hashes() -> None:
    assert ROW.hashed == VALUES
    assert entry_hash(ROW.prev_hash, ROW.hashed) == ROW.hash
