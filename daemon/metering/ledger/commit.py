"""The ledger's one write connection and its group commit, for the one thread that owns it.

No loop and no queue here: ``Committer.commit`` takes a batch of prepared events, writes them
in ONE transaction and commits (WAL, ``synchronous=FULL``: one fsync for the batch), and returns
each event's result, in order.  Who hands the results on is the caller's business: the
in-process writer (``UsageLedger``) settles its callers' futures, the writer process (child.py)
writes them to its pipe.  So:

* an event exists iff its batch committed, and nothing is returned as committed before that;
* a failed commit (full disk, I/O error) fails every event of that batch with ``Unavailable``
  and changes nothing, not even the in-memory chain head;
* one bad event (a replayed event_id) fails only itself: the batch is retried one by one.

Another process (the CLI's ``credits top-up``) may write while the daemon runs: each batch
re-reads the head inside ``BEGIN IMMEDIATE`` and so always chains onto the true last entry.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram

from daemon.core.errors import HubError, Unavailable, ValidationError
from daemon.core.i18n import t
from daemon.metering.ledger.chain import INSERT, SCHEMA, Prepared, apply_pragmas, chain_prepared, read_head
from daemon.metering.ledger.rows import LedgerHead

__all__ = ["Committed", "Committer"]

log = logging.getLogger("daemon.metering.ledger.writer")

_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
_UPSERT_BALANCE = ("INSERT INTO credit_balances VALUES (?, ?) ON CONFLICT(tenant_id) DO UPDATE SET"
                   " balance = excluded.balance")

#: one committed event: its entry's (seq, hash)
Committed = tuple[int, str]


class Committer:
    """The write connection of one ledger file; every method runs on the one thread that opened it.

    ``balances`` and ``head`` may be read from other threads: both are replaced or updated with
    single dict/attribute operations, which are atomic.
    """

    def __init__(self, path: str | Path, registry: CollectorRegistry, *, max_page_count: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        #: cap on the file in pages (tests simulate a full disk with it); None: no cap
        self.max_page_count = max_page_count
        self._conn: sqlite3.Connection | None = None
        #: the last entry this process knows of; replaced whole, so a reader never sees half of it
        self.head = LedgerHead(0, "", 0)
        #: every prepaid tenant's balance
        self.balances: dict[str, Decimal] = {}
        #: the connection's journal_mode and synchronous, as SQLite reports them once open
        self.durability: dict[str, str] = {}
        self._m_commit = Histogram(
            "democratic_ai_ledger_commit_seconds", "Ledger batch write+fsync latency", registry=registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0))
        self._m_batch = Histogram(
            "democratic_ai_ledger_batch_size", "Events per ledger commit", registry=registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
        self._m_events = Counter(
            "democratic_ai_ledger_events", "Usage events committed", ["plan"], registry=registry)
        self._m_events_of: dict[str, Counter] = {}  # the plans' children of _m_events (few: the config's plans)
        self._m_failures = Counter(
            "democratic_ai_ledger_commit_failures", "Ledger batches that failed to commit",
            registry=registry)

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Open (or create) the file, read its head and balances; sqlite3.Error/OSError when it cannot."""
        fresh = not self.path.exists()
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            if fresh:
                os.chmod(self.path, 0o600)  # every tenant's usage is in here, as tenancy.db holds its keys
            apply_pragmas(conn)
            if self.max_page_count is not None:
                conn.execute(f"PRAGMA max_page_count={int(self.max_page_count)}")
            conn.executescript(SCHEMA)
            self.head = read_head(conn)
            self.balances = _load_balances(conn)
            # read back, not assumed: what this connection really runs with (tests and the hub check it)
            sync = conn.execute("PRAGMA synchronous").fetchone()[0]
            self.durability = {"journal_mode": str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower(),
                               "synchronous": _SYNCHRONOUS.get(sync, str(sync))}
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def close(self) -> None:
        """Close the connection (a checkpoint folds the WAL into the file)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- reads on the write connection -----------------------------------------------------

    def notice_other_writers(self) -> None:
        """Idle: pick up what another process committed (a CLI top-up makes a tenant prepaid).

        Under load every batch re-reads the head anyway; this covers a quiet writer, so a
        top-up or a new prepaid account is enforced within the idle period, not at the next call.
        """
        assert self._conn is not None
        try:
            head = read_head(self._conn)
            if head.seq != self.head.seq:
                self.balances = _load_balances(self._conn)
                self.head = head
        except sqlite3.Error as exc:
            log.warning("ledger idle check failed: %s", exc)

    def find(self, event_id: str) -> Committed | None:
        """The committed entry of ``event_id``, or None: how a new writer learns which of the events
        sent to a writer that died were committed before it died."""
        assert self._conn is not None
        row = self._conn.execute("SELECT seq, hash FROM events WHERE event_id = ?", (event_id,)).fetchone()
        return (row[0], row[1]) if row else None

    # -- the group commit ------------------------------------------------------------------

    def commit(self, batch: Sequence[Prepared]) -> list[Committed | HubError]:
        """Write ``batch`` in one transaction; each event's (seq, hash), or the error that refused it."""
        try:
            return self._commit(batch)
        except Exception as exc:
            # a bug here must not kill the only writer and leave callers waiting forever
            log.exception("ledger writer failed on a batch")
            failed = Unavailable(t("errors.writer.usage_ledger_failed", exc=exc))
            return [failed] * len(batch)

    def _commit(self, batch: Sequence[Prepared]) -> list[Committed | HubError]:
        conn = self._conn
        assert conn is not None
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                head = read_head(conn)
                # another process wrote since our last batch: its top-ups count too
                balances = _load_balances(conn) if head.seq != self.head.seq else None
                rows = chain_prepared(batch, head, round(self._clock() * 1_000_000))
                deltas, plans = _tally(batch)
                conn.executemany(INSERT, rows)
                current = balances if balances is not None else self.balances
                updated = {t: current.get(t, Decimal(0)) + d for t, d in deltas.items()}
                if updated:  # postpaid-only batches have none: skip a trip into SQLite
                    conn.executemany(_UPSERT_BALANCE, [(t, str(b)) for t, b in updated.items()])
                last = rows[-1]
                tail = LedgerHead(last[0], last[-1], last[14])
                conn.execute("UPDATE head SET seq = ?, hash = ?, ts_us = ?", tail)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError as exc:
            if len(batch) > 1:
                # one bad event (a replayed event_id) must not fail its neighbours
                return [result for one in batch for result in self._commit([one])]
            return [ValidationError(t("errors.writer.usage_event_refused_ledger", exc=exc))]
        except sqlite3.Error as exc:
            self._m_failures.inc()
            log.error("ledger commit failed, %d events not billed: %s", len(batch), exc)
            failed = Unavailable(t("errors.writer.usage_ledger_cannot_write", exc=exc))
            return [failed] * len(batch)
        # committed: only now does anything outside the file move
        self._m_commit.observe(time.perf_counter() - started)
        self._m_batch.observe(len(batch))
        for plan, n in plans.items():
            counter = self._m_events_of.get(plan)
            if counter is None:  # labels() takes a lock and builds a key: once per plan, not per batch
                counter = self._m_events_of[plan] = self._m_events.labels(plan)
            counter.inc(n)
        if balances is not None:
            self.balances = balances
        self.balances.update(updated)
        self.head = tail
        return [(row[0], row[-1]) for row in rows]


def _load_balances(conn: sqlite3.Connection) -> dict[str, Decimal]:
    return {t: Decimal(b) for t, b in conn.execute("SELECT tenant_id, balance FROM credit_balances")}


def _tally(batch: Sequence[Prepared]) -> tuple[dict[str, Decimal], dict[str, int]]:
    """A batch's credit delta per tenant (an account event opens one at 0) and events per plan."""
    deltas: dict[str, Decimal] = {}
    plans: dict[str, int] = {}
    for ev in batch:
        if ev.credits != "0" or ev.kind == "account":
            deltas[ev.tenant_id] = deltas.get(ev.tenant_id, Decimal(0)) + Decimal(ev.credits)
        plans[ev.plan] = plans.get(ev.plan, 0) + 1
    return deltas, plans
