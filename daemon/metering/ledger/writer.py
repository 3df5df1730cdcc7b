"""The usage ledger: append-only, hash-chained, durable before the caller hears back.

One writer thread owns the only write connection.  Callers on the loop put an
event on a queue and await a future; the writer takes a batch (``batch_max``
events, or what arrived within ``batch_delay_ms`` of the first), writes it in
ONE transaction and commits with ``synchronous=FULL`` (one fsync for the whole
batch: group commit), then settles every caller's future.  So:

* an event exists iff its batch committed, and a receipt is handed out only
  after that commit — a kill -9 at any moment loses only unacknowledged calls;
* a failed commit (full disk, I/O error) fails every caller of that batch with
  ``Unavailable`` and changes nothing, not even the in-memory chain head.

Credits are a column of the event itself (a debit of ``-price`` on a usage
event, a positive top-up event), so a debit is atomic with its usage entry by
construction; ``credit_balances`` caches the sums in the same transaction.
A tenant is prepaid iff it has a balance row, i.e. after its first top-up.

Another process (the CLI's ``credits top-up``) may write while the daemon runs:
each batch re-reads the head inside ``BEGIN IMMEDIATE`` and so always chains
onto the true last entry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future as ThreadFuture
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram

from daemon.core.envelope import Receipt
from daemon.core.errors import HubError, Unavailable, ValidationError
from daemon.core.i18n import t
from daemon.metering.ledger.chain import INSERT, SCHEMA, VerifyResult, apply_pragmas, chain_rows, read_head, verify
from daemon.metering.ledger.events import UsageEvent, open_account_event, top_up_event
from daemon.metering.ledger.rows import LedgerHead
from daemon.metering.ledger.totals import UsageTotals, read_balance, read_totals
from daemon.runtime.config import LedgerConfig

__all__ = ["LEDGER_FILE", "Ledger", "UsageLedger"]

log = logging.getLogger(__name__)

LEDGER_FILE = "ledger.db"

#: group commit: a gap in arrivals this long ends a batch early (batch_delay_ms still caps it)
LINGER_S = 0.0005
#: how often an idle writer looks for entries another process committed
IDLE_CHECK_S = 0.5

_STOP = object()
_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


class Ledger(Protocol):
    """What the usage gate and the reports need of a ledger: ``UsageLedger`` in this process,
    or ``daemon.metering.ledger.process.LedgerProcess`` in a child process (the hub's choice)."""

    async def append(self, event: UsageEvent, *, validated: bool = False) -> Receipt:
        """Durably append the event; the receipt comes only after its commit."""
        ...

    def balance(self, tenant_id: str) -> Decimal | None:
        """The tenant's known credit balance without I/O; None: not prepaid."""
        ...

    async def refresh_balance(self, tenant_id: str) -> Decimal | None:
        """Re-read the balance from the file (another process may have changed it)."""
        ...

    async def totals(self, tenant_id: str, start: datetime, end: datetime) -> UsageTotals:
        """Sums of the tenant's usage events in [start, end)."""
        ...


@dataclass(slots=True)
class _Pending:
    event: UsageEvent
    future: asyncio.Future[Receipt]
    loop: asyncio.AbstractEventLoop


class UsageLedger:
    """``async with UsageLedger(path, config.ledger, registry) as ledger: await ledger.append(ev)``.

    ``clock`` is the wall clock (seconds since the epoch) that stamps events without their own
    ``ts`` and top-ups; tests pass a fake one.  It is read on the writer thread too.
    """

    def __init__(
        self,
        path: str | Path,
        config: LedgerConfig | None = None,
        registry: CollectorRegistry | None = None,
        *,
        max_page_count: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.config = config or LedgerConfig()
        self._clock = clock
        #: cap on the file in pages (tests simulate a full disk with it); None: no cap
        self.max_page_count = max_page_count
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready: ThreadFuture[None] = ThreadFuture()
        self._conn: sqlite3.Connection | None = None  # the writer thread's, and only its
        #: the last entry this process knows of; replaced whole, so the loop never sees half of it
        self._head = LedgerHead(0, "", 0)
        # read from the loop (admit), replaced/updated by the writer: plain dict ops are atomic
        self._balances: dict[str, Decimal] = {}
        #: the writer connection's journal_mode and synchronous, as SQLite reports them once open
        self.durability: dict[str, str] = {}
        registry = registry if registry is not None else CollectorRegistry()
        self._m_commit = Histogram(
            "democratic_ai_ledger_commit_seconds", "Ledger batch write+fsync latency", registry=registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0))
        self._m_batch = Histogram(
            "democratic_ai_ledger_batch_size", "Events per ledger commit", registry=registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
        self._m_events = Counter(
            "democratic_ai_ledger_events", "Usage events committed", ["plan"], registry=registry)
        self._m_failures = Counter(
            "democratic_ai_ledger_commit_failures", "Ledger batches that failed to commit",
            registry=registry)

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> UsageLedger:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="usage-ledger-writer", daemon=True)
        self._thread.start()
        await asyncio.wrap_future(self._ready)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Write what is queued, then stop the writer and close its connection."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_STOP)
        # shield: a cancelled shutdown still lets the writer finish the batch it holds
        await asyncio.shield(asyncio.to_thread(thread.join))

    # -- the loop side ---------------------------------------------------------------------

    async def append(self, event: UsageEvent, *, validated: bool = False) -> Receipt:
        """Durably append one event; returns its receipt after its batch committed.

        ``validated``: the caller has just run ``event.validate()`` (the usage gate does).
        """
        if not validated:
            event.validate()
        # if the caller is cancelled the event may still commit: billed but unacknowledged,
        # never acknowledged but unbilled
        return await self.submit(event)

    def submit(self, event: UsageEvent) -> asyncio.Future[Receipt]:
        """``append`` without a coroutine, for a validated event: the future settles after the commit."""
        if self._thread is None:
            raise Unavailable(t("errors.writer.usage_ledger_not_open"))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Receipt] = loop.create_future()
        self._queue.put(_Pending(event, future, loop))
        return future

    async def append_many(self, events: Iterable[UsageEvent]) -> list[Receipt]:
        """Append several events; they share batches with everyone else's."""
        return list(await asyncio.gather(*(self.append(e) for e in events)))

    async def top_up(self, tenant_id: str, amount: Decimal | str | int, actor: str) -> Receipt:
        """Add prepaid credits (a ledger event); the first top-up makes the tenant prepaid."""
        return await self.append(top_up_event(tenant_id, amount, actor, self._clock()))

    async def open_account(self, tenant_id: str, actor: str) -> Receipt:
        """Make a tenant prepaid with a balance of 0: its calls are refused until a top-up."""
        return await self.append(open_account_event(tenant_id, actor, self._clock()))

    def balance(self, tenant_id: str) -> Decimal | None:
        """The tenant's credit balance, or None when it is not prepaid (postpaid: invoiced)."""
        return self._balances.get(tenant_id)

    def balances(self) -> dict[str, Decimal]:
        """Every prepaid tenant's balance (a copy)."""
        return dict(self._balances)

    async def refresh_balance(self, tenant_id: str) -> Decimal | None:
        """Re-read one balance from disk (another process may have topped it up)."""
        value = await asyncio.to_thread(read_balance, self.path, tenant_id)
        if value is not None:
            self._balances[tenant_id] = value
        return value

    @property
    def head(self) -> Receipt:
        """The last committed entry this process knows of."""
        head = self._head
        return Receipt(head.seq, head.hash)

    async def totals(self, tenant_id: str, start: datetime, end: datetime) -> UsageTotals:
        """Sums of the tenant's usage in [start, end), read in a worker thread."""
        return await asyncio.to_thread(read_totals, self.path, tenant_id, start, end)

    async def verify(self) -> VerifyResult:
        """Walk the whole chain (``chain.verify``) in a worker thread."""
        return await asyncio.to_thread(verify, self.path)

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._open()
        except BaseException as exc:  # reported to __aenter__, which raises it on the loop
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        delay = self.config.batch_delay_ms / 1000.0
        stop = False
        try:
            while not stop:
                try:
                    first = self._queue.get(timeout=IDLE_CHECK_S)
                except queue.Empty:
                    self._notice_other_writers()
                    continue
                if first is _STOP:
                    break
                batch: list[_Pending] = [first]  # type: ignore[list-item]
                deadline = time.monotonic() + delay
                while len(batch) < self.config.batch_max:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        # linger for stragglers of the same burst, not the full delay: once
                        # arrivals pause for LINGER_S the burst is over and waiting only adds latency
                        wait = min(deadline - time.monotonic(), LINGER_S)
                        if wait <= 0:
                            break
                        try:
                            item = self._queue.get(timeout=wait)
                        except queue.Empty:
                            break
                    if item is _STOP:
                        stop = True  # finish this batch first: queued callers are owed an answer
                        break
                    batch.append(item)  # type: ignore[arg-type]
                try:
                    self._commit(batch)
                except Exception as exc:
                    # a bug here must not kill the only writer and leave callers waiting forever
                    log.exception("ledger writer failed on a batch")
                    self._settle(batch, [Unavailable(t("errors.writer.usage_ledger_failed", exc=exc)) for _ in batch])
        finally:
            assert self._conn is not None
            self._conn.close()

    def _notice_other_writers(self) -> None:
        """Idle: pick up what another process committed (a CLI top-up makes a tenant prepaid).

        Under load every batch re-reads the head anyway; this covers a quiet hub, so a
        top-up or a new prepaid account is enforced within IDLE_CHECK_S, not at the next call.
        """
        assert self._conn is not None
        try:
            head = read_head(self._conn)
            if head.seq != self._head.seq:
                self._balances = self._load_balances(self._conn)
                self._head = head
        except sqlite3.Error as exc:
            log.warning("ledger idle check failed: %s", exc)

    def _open(self) -> None:
        fresh = not Path(self.path).exists()
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if fresh:
            os.chmod(self.path, 0o600)  # every tenant's usage is in here, as tenancy.db holds its keys
        apply_pragmas(conn)
        if self.max_page_count is not None:
            conn.execute(f"PRAGMA max_page_count={int(self.max_page_count)}")
        conn.executescript(SCHEMA)
        self._head = read_head(conn)
        self._balances = self._load_balances(conn)
        # read back, not assumed: what this connection really runs with (tests and the hub check it)
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        self.durability = {"journal_mode": str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower(),
                           "synchronous": _SYNCHRONOUS.get(sync, str(sync))}
        self._conn = conn

    @staticmethod
    def _load_balances(conn: sqlite3.Connection) -> dict[str, Decimal]:
        return {t: Decimal(b) for t, b in conn.execute("SELECT tenant_id, balance FROM credit_balances")}

    def _commit(self, batch: list[_Pending]) -> None:
        conn = self._conn
        assert conn is not None
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                head = read_head(conn)
                # another process wrote since our last batch: its top-ups count too
                balances = self._load_balances(conn) if head.seq != self._head.seq else None
                rows = chain_rows((p.event for p in batch), head, round(self._clock() * 1_000_000))
                deltas, plans = self._tally(batch)
                conn.executemany(INSERT, rows)
                current = balances if balances is not None else self._balances
                updated = {t: current.get(t, Decimal(0)) + d for t, d in deltas.items()}
                if updated:  # postpaid-only batches have none: skip a trip into SQLite
                    conn.executemany(
                        "INSERT INTO credit_balances VALUES (?, ?) ON CONFLICT(tenant_id) DO UPDATE SET"
                        " balance = excluded.balance", [(t, str(b)) for t, b in updated.items()])
                last = LedgerHead(rows[-1].seq, rows[-1].hash, rows[-1].ts_us)
                conn.execute("UPDATE head SET seq = ?, hash = ?, ts_us = ?", last)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError as exc:
            if len(batch) > 1:
                # one bad event (a replayed event_id) must not fail its neighbours
                for one in batch:
                    self._commit([one])
                return
            self._settle(batch, [ValidationError(t("errors.writer.usage_event_refused_ledger", exc=exc))])
            return
        except sqlite3.Error as exc:
            self._m_failures.inc()
            log.error("ledger commit failed, %d events not billed: %s", len(batch), exc)
            self._settle(batch, [Unavailable(t("errors.writer.usage_ledger_cannot_write", exc=exc))
                                 for _ in batch])
            return
        # committed: only now does anything outside the file move
        self._m_commit.observe(time.perf_counter() - started)
        self._m_batch.observe(len(batch))
        for plan, n in plans.items():
            self._m_events.labels(plan).inc(n)
        if balances is not None:
            self._balances = balances
        self._balances.update(updated)
        self._head = last
        self._settle(batch, [Receipt(row.seq, row.hash) for row in rows])

    @staticmethod
    def _tally(batch: list[_Pending]) -> tuple[dict[str, Decimal], dict[str, int]]:
        """A batch's credit delta per tenant (an account event opens one at 0) and events per plan."""
        deltas: dict[str, Decimal] = {}
        plans: dict[str, int] = {}
        for pending in batch:
            ev = pending.event
            if ev.credits or ev.kind == "account":
                deltas[ev.tenant_id] = deltas.get(ev.tenant_id, Decimal(0)) + ev.credits
            plans[ev.plan] = plans.get(ev.plan, 0) + 1
        return deltas, plans

    @staticmethod
    def _settle(batch: list[_Pending], results: Sequence[Receipt | HubError]) -> None:
        """Hand results to each caller's loop: one wake-up per loop per batch."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Receipt], Any]]] = {}
        for pending, result in zip(batch, results, strict=True):
            by_loop.setdefault(pending.loop, []).append((pending.future, result))
        for loop, pairs in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, pairs)
            except RuntimeError:
                log.warning("a caller's event loop closed before its ledger receipt arrived")


def _resolve(pairs: list[tuple[asyncio.Future[Receipt], Any]]) -> None:
    for future, result in pairs:
        if future.done():  # the caller was cancelled; the entry stands
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
