"""The usage ledger's on-disk form: schema, the hash chain, and the end-to-end verifier.

Kept apart from the writer (writer.py) so ``democratic-ai ledger verify`` and
tests read the same definition of an entry's hash the writer wrote, without
starting a writer thread.  ``chain_rows`` is the writer's policy with no I/O:
events in, rows out, the wall clock passed in as ``now_us``.

Entry ``n`` stores ``prev_hash`` (entry ``n-1``'s hash, or 64 zeros for the
first) and ``hash = sha256(prev_hash + canonical JSON of its fields)``, so a
change to any field of any entry breaks every later link.  The single-row
``head`` table, written in the same transaction as each batch, anchors the
tail: rows lost from the end (a torn or truncated file) disagree with it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from hashlib import sha256
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any, NamedTuple

from daemon.metering.ledger.events import UsageEvent
from daemon.metering.ledger.rows import COLUMNS, HASHED_COUNT, LedgerHead, LedgerRow

GENESIS = "0" * 64

#: the hashed fields of an entry, in the order they are hashed (and stored): every column but the hashes
FIELDS = COLUMNS[:HASHED_COUNT]

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY,      -- assigned by the one writer, 1, 2, 3 ...
    event_id   TEXT    NOT NULL UNIQUE,  -- UUID; a replayed event cannot be billed twice
    kind       TEXT    NOT NULL,         -- 'usage' | 'top_up' | 'account' | 'served'
    tenant_id  TEXT    NOT NULL,
    subject    TEXT    NOT NULL,         -- opaque 'user:<id>' / 'key:<prefix>', never an email
    plan       TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    module     TEXT    NOT NULL,
    api_calls  INTEGER NOT NULL,
    compute_ms REAL    NOT NULL,
    bytes_in   INTEGER NOT NULL,
    bytes_out  INTEGER NOT NULL,
    units      TEXT    NOT NULL,         -- canonical JSON object of model units (audio_s, images)
    credits    TEXT    NOT NULL,         -- Decimal delta: '-0.05' debit, '1000' top-up, '0'
    ts_us      INTEGER NOT NULL,         -- wall clock, microseconds UTC, never decreasing
    trace_id   TEXT    NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS events_tenant_ts ON events (tenant_id, ts_us);
-- no update or delete path exists; corrections are new events
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'the usage ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'the usage ledger is append-only'); END;
CREATE TABLE IF NOT EXISTS head (
    id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL, ts_us INTEGER NOT NULL
) STRICT;
INSERT OR IGNORE INTO head VALUES (1, 0, '{GENESIS}', 0);
-- a cache of sum(credits) per prepaid tenant, same transaction as the events; verify rechecks it
CREATE TABLE IF NOT EXISTS credit_balances (tenant_id TEXT PRIMARY KEY, balance TEXT NOT NULL) STRICT;
"""

INSERT = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
#: every column, in ``LedgerRow`` order; append a WHERE / ORDER BY
SELECT = f"SELECT {', '.join(COLUMNS)} FROM events"


def _canonical_encoder() -> Callable[[tuple[Any, ...]], str]:
    """``json.dumps(values, ensure_ascii=False, separators=(",", ":"), allow_nan=False)``, the same text.

    ``json.dumps`` with these options builds an encoder (and json's C encoder under it) per call:
    half of what encoding an entry costs.  This builds json's own C encoder once, with the same
    options, and calls it directly; without the C accelerator it is ``JSONEncoder.encode``.
    """
    options = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if c_make_encoder is None:
        return options.encode
    chunks = c_make_encoder(None, options.default, encode_basestring, None, ":", ",", False, False, False)
    return lambda values: "".join(chunks(values, 0))


#: the canonical JSON of an entry's fields, as hashed (built once; nothing in it changes after import)
_CANONICAL = _canonical_encoder()


def entry_hash(prev_hash: str, values: tuple[Any, ...]) -> str:
    """sha256 over the previous hash and the canonical JSON of the entry's FIELDS values."""
    return sha256((prev_hash + _CANONICAL(values)).encode()).hexdigest()


def chain_fault(row: LedgerRow, prev_hash: str, last_ts_us: int) -> tuple[str, str] | None:
    """Why ``row`` cannot follow the entry whose hash is ``prev_hash``, stamped ``last_ts_us``; None when it can.

    ``(reason, what)``: ``broken_chain`` (it links to another entry), ``altered`` (its fields do not hash
    to its hash) or ``time`` (it goes back in time).  The one rule of the chain: a site's ledger, the
    central ledger's ingest and both verifications apply it.
    """
    if row.prev_hash != prev_hash:
        return "broken_chain", "does not link to the entry before it"
    if entry_hash(prev_hash, row.hashed) != row.hash:
        return "altered", "was altered: its hash does not match"
    if row.ts_us < last_ts_us:
        return "time", "goes back in time"
    return None


def canonical_units(units: Mapping[str, float]) -> str:
    """Units as stored and hashed: compact JSON with sorted keys, so equal units hash equal."""
    if not units:
        return "{}"  # the common case, on the writer's hot path
    return json.dumps(dict(units), sort_keys=True, separators=(",", ":"), allow_nan=False)


class Prepared(NamedTuple):
    """An event as its entry will store it, all but what the chain assigns (seq, ts_us, the hashes).

    ``chain_prepared`` links these; ``prepare`` makes one from a ``UsageEvent``, the writer process
    one straight from its pipe's frame (no ``UsageEvent`` in between).  The field order is the
    entry's hashing order, so the chain only puts seq and ts_us around them.
    """

    event_id: str
    kind: str
    tenant_id: str
    subject: str
    plan: str
    action: str
    module: str
    api_calls: int
    compute_ms: float
    bytes_in: int
    bytes_out: int
    units: str  # canonical_units
    credits: str  # the Decimal as text, "0" when zero
    ts_us: int | None  # the event's own stamp; None: stamped when written
    trace_id: str


def prepare(ev: UsageEvent) -> Prepared:
    """``ev`` as its entry will store it (TypeError/ValueError/ArithmeticError for a value that cannot be)."""
    return Prepared(ev.event_id, ev.kind, ev.tenant_id, ev.subject, ev.plan, ev.action, ev.module,
                    int(ev.api_calls), float(ev.compute_ms), int(ev.bytes_in), int(ev.bytes_out),
                    canonical_units(ev.units), str(ev.credits) if ev.credits else "0",
                    round(ev.ts * 1_000_000) if ev.ts else None, ev.trace_id)


def chain_prepared(events: Sequence[Prepared], head: LedgerHead, now_us: int) -> list[tuple[Any, ...]]:
    """``chain_rows`` for prepared events: each entry as a plain tuple in column order (what INSERT takes)."""
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    seq, prev, last_ts = head
    for ev in events:
        seq += 1
        stamp = ev[13]
        if stamp is None:
            stamp = now_us
        if stamp > last_ts:
            last_ts = stamp
        values = (seq, *ev[:13], last_ts, ev[14])
        digest = sha256((prev + _CANONICAL(values)).encode()).hexdigest()
        append((*values, prev, digest))
        prev = digest
    return rows


def chain_rows(events: Iterable[UsageEvent], head: LedgerHead, now_us: int) -> list[LedgerRow]:
    """The entries that follow ``head`` for these events, in order, each linked to the one before.

    ``now_us`` (wall clock, microseconds) stamps an event without its own ``ts``; a stamp
    earlier than the entry before is raised to it, so a wall clock that jumps back cannot
    reorder the ledger.
    """
    return [LedgerRow._make(row) for row in chain_prepared([prepare(ev) for ev in events], head, now_us)]


def apply_pragmas(conn: sqlite3.Connection) -> None:
    """WAL + synchronous=FULL: a commit is on disk (WAL fsynced) before it returns."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")


def connect_ro(path: str | Path) -> sqlite3.Connection:
    """A read-only connection; never creates a file."""
    conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def read_head(conn: sqlite3.Connection) -> LedgerHead:
    """The ``head`` row: the last entry committed, by whichever process wrote it."""
    return LedgerHead._make(conn.execute("SELECT seq, hash, ts_us FROM head").fetchone())


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What ``verify`` found: ok, or the first entry that does not hold and why."""

    ok: bool
    count: int  # entries that verified before the first problem (all of them when ok)
    first_bad_seq: int | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``democratic-ai ledger verify --json`` and the admin API."""
        return {"ok": self.ok, "count": self.count, "first_bad_seq": self.first_bad_seq,
                "reason": self.reason}


def verify(path: str | Path) -> VerifyResult:
    """Walk the chain from seq 1 to the head; name the first entry that does not hold."""
    if not Path(path).is_file():
        return VerifyResult(False, 0, None, f"no ledger at {path}")
    count, expected = 0, 1
    try:
        conn = connect_ro(path)
        # read a truncated file as far as it goes (SQLite otherwise refuses it whole);
        # harmless on a read-only connection
        conn.execute("PRAGMA writable_schema=ON")
    except sqlite3.Error as exc:
        return VerifyResult(False, 0, 1, f"cannot open the ledger: {exc}")
    try:
        prev, last_ts = GENESIS, 0
        balances: dict[str, Decimal] = {}
        for row in map(LedgerRow._make, conn.execute(f"{SELECT} ORDER BY seq")):
            seq = row.seq
            if not isinstance(seq, int) or seq < expected:
                return VerifyResult(False, count, expected, f"entry {expected} is unreadable (torn or corrupt)")
            if seq != expected:
                return VerifyResult(False, count, expected, f"entry {expected} is missing (next is {seq})")
            fault = chain_fault(row, prev, last_ts)
            if fault is not None:
                return VerifyResult(False, count, seq, f"entry {seq} {fault[1]}")
            if row.credits != "0":
                balances[row.tenant_id] = balances.get(row.tenant_id, Decimal(0)) + Decimal(row.credits)
            prev, last_ts, count, expected = row.hash, row.ts_us, count + 1, expected + 1
        head_seq, head_hash, _ = read_head(conn)
        if head_seq != count or head_hash != prev:
            return VerifyResult(False, count, count + 1,
                                f"the ledger ends at entry {count} but its head records entry {head_seq}: "
                                "the tail is torn or lost")
        for tenant, text in conn.execute("SELECT tenant_id, balance FROM credit_balances"):
            if Decimal(text) != balances.pop(tenant, Decimal(0)):
                return VerifyResult(False, count, None, f"credit balance of tenant {tenant} != its events")
        if balances:
            return VerifyResult(False, count, None, f"credit balances missing for {sorted(balances)}")
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            return VerifyResult(False, count, None, f"sqlite quick_check: {check}")
    except (sqlite3.Error, InvalidOperation, TypeError, ValueError) as exc:
        # a torn page or a truncated file surfaces as 'database disk image is malformed'
        return VerifyResult(False, count, expected, f"entry {expected} is unreadable (torn or corrupt): {exc}")
    finally:
        conn.close()
    return VerifyResult(True, count, None, f"{count} entries, chain intact")
