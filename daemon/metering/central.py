"""The central billing node's second ledger: every site's rows, keyed by (site node id, site seq).

A site pushes its ledger in batches; ``CentralLedger.ingest`` stores a batch or refuses it whole:

* the site id is the authenticated sender (the fleet node id the batch was signed with), never
  a field of a row, so a site — even a malicious but fleet-trusted one — can only ever write
  rows under its own id;
* rows already held (a re-sent batch, an overlap) are compared column by column and skipped
  when identical, so a retry is acknowledged idempotently and never billed twice;
* a row that differs from the one held at the same (site, seq), a gap after the last row held,
  a broken link (``prev_hash``) or an altered row (``hash`` != ``entry_hash``) refuses the
  whole batch with ``Conflict`` naming the site, the seq and both hashes — never skipped;
* new rows are written in ONE transaction with ``synchronous=FULL`` in WAL mode, so the seq
  returned (the highest contiguous seq held) is on disk before the site hears it.

One writer: only ``CentralLedger`` writes ``central.db`` and the hub calls it from one thread
(its methods also hold a lock).  ``CentralReader`` is the read-only face any process may open
beside it (the CLI: ``sync status``, ``invoice --all-sites``, ``settlement``, ``usage export``).

Each stored row also gets a ``billing_period``: the UTC month of its ``ts_us`` while the row
arrives no later than ``grace_days`` after that month ends (a late event reopens its draft
invoice), else the month it arrived in, with ``adjusted_from`` naming the month it belonged to:
an adjustment on the next invoice, never lost and never reopening a closed one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from daemon.core.errors import Conflict, NotFound, Unavailable, ValidationError
from daemon.core.i18n import Text, t
from daemon.metering.billing import parse_period
from daemon.metering.ledger.chain import GENESIS, apply_pragmas, chain_fault, connect_ro, entry_hash
from daemon.metering.ledger.events import MAX_UNITS
from daemon.metering.ledger.rows import COLUMNS, LedgerRow
from daemon.metering.ledger.totals import UsageTotals
from daemon.metering.site_rows import MAX_SITE_ID, TYPES, checked_batch

__all__ = ["CENTRAL_FILE", "CentralLedger", "CentralReader", "SiteStatus", "combine_totals"]

log = logging.getLogger(__name__)

CENTRAL_FILE = "central.db"

#: the most sites the centre keeps a status row for (a fleet is far smaller)
MAX_SITES = 4096
#: the most rows one ``rows`` page returns
MAX_PAGE = 10_000
#: the most (serving, origin) pairs a settlement lists
MAX_PAIRS = 10_000
#: the most trace ids a settlement pair lists as unmatched
MAX_UNMATCHED = 20
MAX_ERROR = 1000

_SQL_TYPES = {int: "INTEGER", float: "REAL", str: "TEXT"}
#: a site's ledger columns, as the site stored them (one definition: ledger/rows.py)
_ROW_COLUMNS_SQL = ",\n    ".join(f"{column:<14} {_SQL_TYPES[kind]:<7} NOT NULL"
                                  for column, kind in zip(COLUMNS, TYPES, strict=True))
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (
    n              INTEGER PRIMARY KEY,   -- arrival order at the centre: 1, 2, 3 ... (export cursor)
    site           TEXT    NOT NULL,      -- the sending site's node id (authenticated, never from the row)
    {_ROW_COLUMNS_SQL},
    billing_period TEXT    NOT NULL,      -- 'YYYY-MM' the row is billed in
    adjusted_from  TEXT,                  -- the month it belonged to, when it arrived after the grace period
    received_us    INTEGER NOT NULL,
    UNIQUE (site, seq)
) STRICT;
CREATE INDEX IF NOT EXISTS events_tenant_period ON events (tenant_id, billing_period);
CREATE INDEX IF NOT EXISTS events_period_kind ON events (billing_period, kind);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'the central ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'the central ledger is append-only'); END;
CREATE TABLE IF NOT EXISTS sites (
    node_id    TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL,
    acked_seq  INTEGER NOT NULL,          -- the highest contiguous seq held
    acked_hash TEXT    NOT NULL,          -- that row's hash; GENESIS before the first
    last_ts_us INTEGER NOT NULL,          -- that row's ts_us; 0 before the first
    last_error TEXT    NOT NULL,
    error_at   REAL,
    updated_at REAL    NOT NULL
) STRICT;
"""

_ROW_COLUMNS = ", ".join(COLUMNS)
_INSERT = (f"INSERT INTO events (site, {_ROW_COLUMNS}, billing_period, adjusted_from, received_us)"
           f" VALUES ({', '.join('?' * (len(COLUMNS) + 4))})")
_SITE_COLUMNS = "node_id, name, acked_seq, acked_hash, last_ts_us, last_error, error_at, updated_at"


@dataclass(frozen=True, slots=True)
class SiteStatus:
    """What the centre holds of one site: its acknowledged position, lag and last refusal."""

    node_id: str
    name: str
    acked_seq: int
    acked_hash: str
    lag_seconds: float | None  # now - ts of the last row held; None before the first
    last_error: str
    error_at: float | None
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``sync status`` on the central node (one entry of ``sites``)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Month:
    label: str
    start_us: int
    end_us: int


def _month_of(ts_us: int) -> _Month:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ts_us)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    end = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
    return _Month(f"{moment.year:04d}-{moment.month:02d}", _epoch_us(start), _epoch_us(end))


def _epoch_us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


class CentralReader:
    """Read-only queries of ``central.db``; safe in any process beside the one writer.

    Every query opens its own read-only connection (WAL: it reads the last commit and never
    waits for the writer) and every answer is bounded.  ``clock`` gives ``now`` for lag.
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        if not self.path.is_file():
            raise NotFound(t("errors.central.no_central_ledger_central", path=self.path))

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = connect_ro(self.path)
        try:
            yield conn
        finally:
            conn.close()

    def acked(self, site: str) -> int:
        """The highest contiguous seq held for ``site``; 0 for a site never heard from."""
        with self._read() as conn:
            row = conn.execute("SELECT acked_seq FROM sites WHERE node_id = ?", (site,)).fetchone()
        return int(row[0]) if row else 0

    def sites(self) -> list[SiteStatus]:
        """Every site's status, by node id."""
        now = self._clock()
        with self._read() as conn:
            rows = conn.execute(f"SELECT {_SITE_COLUMNS} FROM sites ORDER BY node_id LIMIT ?", (MAX_SITES,))
            return [SiteStatus(node, name, seq, digest, (now - ts_us / 1e6) if seq else None, error, error_at,
                               updated_at)
                    for node, name, seq, digest, ts_us, error, error_at, updated_at in rows]

    def totals(self, tenant_id: str, period: str) -> dict[str, UsageTotals]:
        """Per site node id, the sums of the tenant's rows billed in ``period`` (``YYYY-MM`` or ``YYYY``).

        Like ``ledger.totals.read_totals``: counts and measurements from kind ``usage`` rows, credits
        from every row; ``first_seq``/``last_seq`` are that site's seqs.
        """
        first, last = _period_range(period)
        args = (tenant_id, first, last)
        where = "tenant_id = ? AND billing_period BETWEEN ? AND ?"
        out: dict[str, UsageTotals] = {}
        with self._read() as conn:
            sums = conn.execute(
                "SELECT site, count(*), total(api_calls), total(compute_ms), total(bytes_in), total(bytes_out),"
                f" min(seq), max(seq) FROM events WHERE {where} AND kind = 'usage' GROUP BY site"
                " ORDER BY site LIMIT ?", (*args, MAX_SITES)).fetchall()
            units: dict[str, dict[str, float]] = {}
            for site, key, value in conn.execute(
                    "SELECT site, j.key, total(j.value) FROM events, json_each(events.units) AS j"
                    f" WHERE {where} AND kind = 'usage' GROUP BY site, j.key ORDER BY site, j.key LIMIT ?",
                    (*args, MAX_SITES * MAX_UNITS)):
                units.setdefault(site, {})[key] = value
            credits: dict[str, tuple[Decimal, Decimal]] = {}
            for site, text in conn.execute(
                    f"SELECT site, credits FROM events WHERE {where} AND credits != '0'", args):
                debited, topped = credits.get(site, (Decimal(0), Decimal(0)))
                amount = Decimal(text)
                credits[site] = (debited - amount, topped) if amount < 0 else (debited, topped + amount)
        for site, n, calls, cms, b_in, b_out, lo, hi in sums:
            debited, topped = credits.pop(site, (Decimal(0), Decimal(0)))
            out[site] = UsageTotals(tenant_id, n, int(calls), cms, int(b_in), int(b_out), units.get(site, {}),
                                    debited, topped, lo, hi)
        for site, (debited, topped) in credits.items():  # top-ups only, no usage in the period
            out[site] = UsageTotals(tenant_id, 0, 0, 0.0, 0, 0, {}, debited, topped, None, None)
        return dict(sorted(out.items()))

    def settlement(self, period: str) -> list[dict[str, Any]]:
        """Per ordered pair (serving site, origin site): what the serving site ran for the origin's callers.

        Counted from both sides: the origin's ``usage`` rows whose module is
        ``peer:<serving node id>/<module>`` ("billed") and the serving site's ``served`` rows whose
        subject is ``node:<origin node id>`` ("served").  ``balanced`` holds when both sides count
        the same calls and units and every trace id on one side is on the other;
        ``unmatched_trace_ids`` lists up to MAX_UNMATCHED that are not.  Both sides are counted by
        billing period, so a call whose two records landed in different periods (one site synced
        after the grace period) shows as unmatched on both until the next period is settled too.
        """
        first, last = _period_range(period)
        names = {status.node_id: status.name for status in self.sites()}
        pairs: dict[tuple[str, str], dict[str, Any]] = {}
        in_period = "billing_period BETWEEN ? AND ?"
        billed_pair = ("substr(module, 6, instr(module, '/') - 6)", "site")
        served_pair = ("site", "substr(subject, 6)")
        billed_where = f"{in_period} AND kind = 'usage' AND module LIKE 'peer:%/%'"
        served_where = f"{in_period} AND kind = 'served' AND subject LIKE 'node:%'"
        with self._read() as conn:
            for side, (serving, origin), where in (("billed", billed_pair, billed_where),
                                                   ("served", served_pair, served_where)):
                for s, o, events, calls, cms in conn.execute(
                        f"SELECT {serving}, {origin}, count(*), total(api_calls), total(compute_ms) FROM events"
                        f" WHERE {where} GROUP BY 1, 2 ORDER BY 1, 2 LIMIT ?", (first, last, MAX_PAIRS)):
                    pair = pairs.setdefault((s, o), _empty_pair(s, o, names))
                    pair[side].update(events=events, calls=int(calls), compute_ms=cms)
                for s, o, key, value in conn.execute(
                        f"SELECT {serving}, {origin}, j.key, total(j.value) FROM events, json_each(events.units) AS j"
                        f" WHERE {where} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 LIMIT ?",
                        (first, last, MAX_PAIRS * MAX_UNITS)):
                    if (s, o) in pairs:
                        pairs[(s, o)][side]["units"][key] = value
            for (s, o), pair in sorted(pairs.items())[:MAX_PAIRS]:
                pair["unmatched_trace_ids"] = _unmatched(conn, s, o, first, last)
                billed, served = pair["billed"], pair["served"]
                pair["balanced"] = (billed["calls"] == served["calls"] and billed["events"] == served["events"]
                                    and _same_units(billed["units"], served["units"])
                                    and not pair["unmatched_trace_ids"])
        return [pairs[key] for key in sorted(pairs)[:MAX_PAIRS]]

    def rows(self, since: int = 0, limit: int = 1000) -> list[tuple[str, LedgerRow]]:
        """Up to ``limit`` rows in arrival order after the first ``since`` (site node id, row).

        Rows are numbered 1, 2, 3 ... as they arrive and never removed, so ``since`` is how many
        rows a reader has already taken: the next page starts at ``since + len(page)``.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1..{MAX_PAGE}, not {limit}")
        with self._read() as conn:
            cursor = conn.execute(f"SELECT site, {_ROW_COLUMNS} FROM events WHERE n > ? ORDER BY n LIMIT ?",
                                  (max(0, since), limit))
            return [(row[0], LedgerRow._make(row[1:])) for row in cursor]

    def verify(self) -> dict[str, Any]:
        """Re-verify every site's chain from GENESIS against the rows held and its acknowledged head.

        ``{"ok": bool, "sites": {node id: {"ok", "rows", "first_bad_seq", "reason"}}}``; streams the
        rows (memory does not grow with the ledger).
        """
        report: dict[str, dict[str, Any]] = {}
        with self._read() as conn:
            heads = {node: (seq, digest) for node, seq, digest in
                     conn.execute("SELECT node_id, acked_seq, acked_hash FROM sites LIMIT ?", (MAX_SITES,))}
            held = [site for (site,) in conn.execute("SELECT DISTINCT site FROM events LIMIT ?", (MAX_SITES,))]
            for site in sorted(set(heads) | set(held)):
                report[site] = _verify_site(conn, site, heads.get(site))
        return {"ok": all(one["ok"] for one in report.values()), "sites": report}


class CentralLedger(CentralReader):
    """The one writer of ``central.db``: ``ingest`` a site's batch, ``record_error`` a refusal.

    Synchronous: the hub runs it in one writer thread (``asyncio.to_thread`` behind a lock, or a
    one-thread executor); a lock here also keeps two threads from interleaving.  ``grace_days``:
    how long after a month ends its late rows still count in it.  ``clock``: wall clock seconds.
    """

    def __init__(self, path: str | Path, *, grace_days: float = 5, clock: Callable[[], float] = time.time,
                 registry: CollectorRegistry | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # made 0600 before SQLite opens it: every tenant's usage is in here (-wal/-shm take its mode)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        super().__init__(path, clock=clock)
        self._grace_us = round(grace_days * 86_400 * 1_000_000)
        self._lock = threading.Lock()
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            apply_pragmas(conn)  # WAL + synchronous=FULL: a commit is on disk before it returns
            conn.executescript(SCHEMA)
        except sqlite3.Error:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn
        registry = registry if registry is not None else CollectorRegistry()
        self._m_refused = Counter(
            "democratic_ai_central_refused_batches", "Sync batches the central ledger refused, by reason",
            ["reason"], registry=registry)
        self._m_rows = Counter(
            "democratic_ai_central_rows", "Site ledger rows the central ledger stored", registry=registry)

    def __enter__(self) -> CentralLedger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the write connection; idempotent."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    @property
    def durability(self) -> dict[str, str]:
        """The write connection's journal_mode and synchronous, as SQLite reports them."""
        with self._lock:
            conn = self._writer()
            mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            sync = int(conn.execute("PRAGMA synchronous").fetchone()[0])
        return {"journal_mode": mode, "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(sync, "?")}

    def _writer(self) -> sqlite3.Connection:
        if self._conn is None:
            raise Unavailable(t("errors.central.central_ledger_closed"))
        return self._conn

    def ingest(self, site: str, site_name: str, rows: Sequence[Sequence[Any]]) -> int:
        """Store a batch of ``site``'s rows (seq order, consecutive); return the highest contiguous seq held.

        ``site`` must be the authenticated sender's node id.  All or nothing: a refused batch
        stores no row.  ``ValidationError``: a malformed row; ``Conflict``: a differing row, a gap,
        a broken chain or an altered row (``details``: site, seq, held_hash, sent_hash).  Either
        is also recorded as the site's ``last_error`` and counted.  ``Unavailable``: the file
        cannot be written (nothing acknowledged).
        """
        try:
            batch = checked_batch(site, site_name, rows)
        except ValidationError as exc:
            self._refused(site, "malformed", exc)
            raise
        with self._lock:
            conn = self._writer()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    acked = self._store(conn, site, site_name, batch)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                log.error("central ledger cannot store %d rows of site %s: %s", len(batch), site, exc)
                raise Unavailable(t("errors.central.central_ledger_cannot_write", exc=exc)) from None
            except _Refusal as refusal:
                reason, error = refusal.reason, Conflict(refusal.message, refusal.details)
            else:
                return acked
        # after the rollback and outside the lock: record_error writes in its own transaction
        self._refused(site, reason, error)
        raise error

    def record_error(self, site: str, message: str) -> None:
        """Record ``message`` as the site's last error (shown by ``sync status``).

        Call it for authenticated senders only; past MAX_SITES known sites an unknown one is only logged.
        """
        if not isinstance(site, str) or not 0 < len(site) <= MAX_SITE_ID:
            log.warning("sync error from an unnamed site: %s", message)
            return
        now = self._clock()
        with self._lock:
            conn = self._writer()
            try:
                known = conn.execute("SELECT 1 FROM sites WHERE node_id = ?", (site,)).fetchone()
                if known:
                    conn.execute("UPDATE sites SET last_error = ?, error_at = ? WHERE node_id = ?",
                                 (message[:MAX_ERROR], now, site))
                elif conn.execute("SELECT count(*) FROM sites").fetchone()[0] < MAX_SITES:
                    conn.execute(f"INSERT INTO sites ({_SITE_COLUMNS}) VALUES (?, '', 0, ?, 0, ?, ?, ?)",
                                 (site, GENESIS, message[:MAX_ERROR], now, now))
                else:
                    log.warning("sync error from unknown site %s not recorded (too many sites): %s", site, message)
            except sqlite3.Error as exc:
                log.error("central ledger cannot record an error of site %s: %s", site, exc)

    # -- inside the write transaction ------------------------------------------------------------

    def _store(self, conn: sqlite3.Connection, site: str, site_name: str, batch: list[LedgerRow]) -> int:
        """Check the batch against what is held and insert its new rows; raises _Refusal."""
        now = self._clock()
        held = conn.execute("SELECT acked_seq, acked_hash, last_ts_us FROM sites WHERE node_id = ?",
                            (site,)).fetchone()
        acked, acked_hash, last_ts = held if held else (0, GENESIS, 0)
        first, last = batch[0].seq, batch[-1].seq
        if first <= acked:
            self._compare_held(conn, site, batch[: min(last, acked) - first + 1])
        fresh = batch[max(0, acked + 1 - first):]
        if not fresh:
            return int(acked)  # all of it already held: acknowledged idempotently, nothing to write
        start = fresh[0]
        if start.seq != acked + 1:
            raise _Refusal(
                "gap", t("errors.central.batch_gap", site=site, seq=start.seq, acked=acked, held_hash=acked_hash,
                         prev_hash=start.prev_hash),
                site, start.seq, acked_hash, start.prev_hash, acked=int(acked))
        prev, now_us = acked_hash, round(now * 1_000_000)
        month = _month_of(start.ts_us)
        current = _month_of(now_us)
        values: list[tuple[Any, ...]] = []
        for row in fresh:
            fault = chain_fault(row, prev, last_ts)
            if fault is not None:
                raise _chain_refusal(fault[0], site, row, prev)
            if not month.start_us <= row.ts_us < month.end_us:
                month = _month_of(row.ts_us)
            if now_us <= month.end_us + self._grace_us:
                values.append((site, *row, month.label, None, now_us))
            else:  # too late for its own month: the next invoice's adjustment
                values.append((site, *row, current.label, month.label, now_us))
            prev, last_ts = row.hash, row.ts_us
        conn.executemany(_INSERT, values)
        end = fresh[-1]
        conn.execute(
            f"INSERT INTO sites ({_SITE_COLUMNS}) VALUES (?, ?, ?, ?, ?, '', NULL, ?) ON CONFLICT(node_id) DO UPDATE"
            " SET name = excluded.name, acked_seq = excluded.acked_seq, acked_hash = excluded.acked_hash,"
            " last_ts_us = excluded.last_ts_us, last_error = '', error_at = NULL, updated_at = excluded.updated_at",
            (site, site_name, end.seq, end.hash, end.ts_us, now))
        self._m_rows.inc(len(values))
        return end.seq

    @staticmethod
    def _compare_held(conn: sqlite3.Connection, site: str, sent: list[LedgerRow]) -> None:
        """Rows at seqs already held must equal them, column for column (one range read)."""
        held = conn.execute(f"SELECT {_ROW_COLUMNS} FROM events WHERE site = ? AND seq BETWEEN ? AND ?"
                            " ORDER BY seq", (site, sent[0].seq, sent[-1].seq)).fetchall()
        for mine, theirs in zip(held, sent, strict=False):
            if tuple(mine) != tuple(theirs):
                raise _Refusal("differs", t("errors.central.row_differs", site=site, seq=theirs.seq,
                                            held_hash=mine[-1], sent_hash=theirs.hash),
                               site, theirs.seq, mine[-1], theirs.hash)
        if len(held) != len(sent):  # cannot happen while acked_seq is true; refuse rather than guess
            raise _Refusal("gap", t("errors.central.rows_missing_below_ack", site=site),
                           site, sent[len(held)].seq, "", sent[len(held)].hash)

    def _refused(self, site: str, reason: str, error: ValidationError | Conflict) -> None:
        self._m_refused.labels(reason).inc()
        # the message of a chain refusal already names the seq and both hashes
        log.warning("sync batch of site %s refused (%s): %s", site, reason, error.message)
        self.record_error(site, error.message)


def _chain_refusal(reason: str, site: str, row: LedgerRow, prev: str) -> _Refusal:
    """The refusal of a row that breaks the chain, naming the hashes an operator compares."""
    if reason == "broken_chain":
        return _Refusal(reason, t("errors.central.broken_chain", site=site, seq=row.seq, previous=row.seq - 1,
                                  held_hash=prev, prev_hash=row.prev_hash), site, row.seq, prev, row.prev_hash)
    if reason == "altered":
        expected = entry_hash(prev, row.hashed)
        return _Refusal(reason, t("errors.central.row_altered", site=site, seq=row.seq, expected=expected,
                                  sent_hash=row.hash), site, row.seq, expected, row.hash)
    return _Refusal(reason, t("errors.central.row_back_in_time", site=site, seq=row.seq, sent_hash=row.hash),
                    site, row.seq, prev, row.hash)


class _Refusal(Exception):
    """A batch the chain rules refuse; raised inside the transaction, turned into Conflict after rollback."""

    def __init__(self, reason: str, message: Text, site: str, seq: int, held_hash: str, sent_hash: str,
                 acked: int | None = None) -> None:
        super().__init__(str(message))
        self.reason = reason
        self.message = message
        self.details: dict[str, Any] = {"reason": reason, "site": site, "seq": seq, "held_hash": held_hash,
                                        "sent_hash": sent_hash}
        if acked is not None:  # a gap: what the centre holds, so the site can send again from there
            self.details["acked"] = acked


def _period_range(period: str) -> tuple[str, str]:
    """The first and last ``YYYY-MM`` labels of a period (a month, or the twelve of a year)."""
    bounds = parse_period(period)
    if bounds.cycle == "yearly":
        return f"{bounds.label}-01", f"{bounds.label}-12"
    return bounds.label, bounds.label


def _empty_pair(serving: str, origin: str, names: dict[str, str]) -> dict[str, Any]:
    def side() -> dict[str, Any]:
        return {"events": 0, "calls": 0, "compute_ms": 0.0, "units": {}}

    return {"serving_site": serving, "serving_name": names.get(serving, ""), "origin_site": origin,
            "origin_name": names.get(origin, ""), "billed": side(), "served": side(), "balanced": False,
            "unmatched_trace_ids": []}


def _unmatched(conn: sqlite3.Connection, serving: str, origin: str, first: str, last: str) -> list[str]:
    """Trace ids on one side of the pair and not the other, at most MAX_UNMATCHED."""
    billed = ("SELECT trace_id FROM events WHERE site = ? AND billing_period BETWEEN ? AND ? AND kind = 'usage'"
              " AND substr(module, 1, ?) = ?")
    served = ("SELECT trace_id FROM events WHERE site = ? AND billing_period BETWEEN ? AND ? AND kind = 'served'"
              " AND subject = ?")
    prefix = f"peer:{serving}/"
    billed_args = (origin, first, last, len(prefix), prefix)
    served_args = (serving, first, last, f"node:{origin}")
    found = [t for (t,) in conn.execute(f"{billed} EXCEPT {served} LIMIT ?", (*billed_args, *served_args,
                                                                              MAX_UNMATCHED))]
    found += [t for (t,) in conn.execute(f"{served} EXCEPT {billed} LIMIT ?", (*served_args, *billed_args,
                                                                               MAX_UNMATCHED - len(found)))]
    return found


def _same_units(a: dict[str, float], b: dict[str, float]) -> bool:
    # sums of the same floats in another order may differ in the last bit
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-9) for k in a)


def _verify_site(conn: sqlite3.Connection, site: str, head: tuple[int, str] | None) -> dict[str, Any]:
    count, prev, last_ts = 0, GENESIS, 0

    def bad(seq: int | None, reason: str) -> dict[str, Any]:
        return {"ok": False, "rows": count, "first_bad_seq": seq, "reason": reason}

    cursor = conn.execute(f"SELECT {_ROW_COLUMNS} FROM events WHERE site = ? ORDER BY seq", (site,))
    for row in map(LedgerRow._make, cursor):
        if row.seq != count + 1:
            return bad(count + 1, f"seq {count + 1} is missing (next is {row.seq})")
        fault = chain_fault(row, prev, last_ts)
        if fault is not None:
            return bad(row.seq, f"seq {row.seq} {fault[1]}")
        count, prev, last_ts = count + 1, row.hash, row.ts_us
    acked, acked_hash = head if head else (0, GENESIS)
    if (acked, acked_hash) != (count, prev):
        return bad(count + 1, f"the rows end at seq {count} but the site's acknowledged head is seq {acked}")
    return {"ok": True, "rows": count, "first_bad_seq": None, "reason": f"{count} rows, chain intact"}


def combine_totals(tenant_id: str, parts: Iterable[UsageTotals]) -> UsageTotals:
    """One tenant's totals across sites (``invoice --all-sites``); seqs are per site, so none is kept."""
    events = calls = b_in = b_out = 0
    cms = 0.0
    units: dict[str, float] = {}
    debited, topped = Decimal(0), Decimal(0)
    for part in parts:
        events += part.events
        calls += part.api_calls
        cms += part.compute_ms
        b_in += part.bytes_in
        b_out += part.bytes_out
        for key, value in part.units.items():
            units[key] = units.get(key, 0.0) + value
        debited += part.credits_debited
        topped += part.credits_topped_up
    return UsageTotals(tenant_id, events, calls, cms, b_in, b_out, dict(sorted(units.items())), debited, topped,
                       None, None)
