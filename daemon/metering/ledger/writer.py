"""The usage ledger: append-only, hash-chained, durable before the caller hears back.

One writer thread owns the only write connection (``Committer``, commit.py).  Callers on the
loop put an event on a queue and await a future; the writer takes a batch (``batch_max``
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
import queue
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

from prometheus_client import CollectorRegistry

from daemon.core.envelope import Receipt
from daemon.core.errors import HubError, Unavailable, ValidationError
from daemon.core.i18n import t
from daemon.metering.ledger.chain import Prepared, VerifyResult, prepare, verify
from daemon.metering.ledger.commit import Committer
from daemon.metering.ledger.events import UsageEvent, open_account_event, top_up_event
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
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready: ThreadFuture[None] = ThreadFuture()
        #: the write connection, the writer thread's only; its head and balances are read from the loop
        self._committer = Committer(self.path, registry if registry is not None else CollectorRegistry(),
                                    max_page_count=max_page_count, clock=clock)

    @property
    def max_page_count(self) -> int | None:
        """Cap on the file in pages (tests simulate a full disk with it); None: no cap."""
        return self._committer.max_page_count

    @property
    def durability(self) -> dict[str, str]:
        """The writer connection's journal_mode and synchronous, as SQLite reports them once open."""
        return self._committer.durability

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
        return self._committer.balances.get(tenant_id)

    def balances(self) -> dict[str, Decimal]:
        """Every prepaid tenant's balance (a copy)."""
        return dict(self._committer.balances)

    async def refresh_balance(self, tenant_id: str) -> Decimal | None:
        """Re-read one balance from disk (another process may have topped it up)."""
        value = await asyncio.to_thread(read_balance, self.path, tenant_id)
        if value is not None:
            self._committer.balances[tenant_id] = value
        return value

    @property
    def head(self) -> Receipt:
        """The last committed entry this process knows of."""
        head = self._committer.head
        return Receipt(head.seq, head.hash)

    async def totals(self, tenant_id: str, start: datetime, end: datetime) -> UsageTotals:
        """Sums of the tenant's usage in [start, end), read in a worker thread."""
        return await asyncio.to_thread(read_totals, self.path, tenant_id, start, end)

    async def verify(self) -> VerifyResult:
        """Walk the whole chain (``chain.verify``) in a worker thread."""
        return await asyncio.to_thread(verify, self.path)

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        committer = self._committer
        try:
            committer.open()
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
                    committer.notice_other_writers()
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
                self._write(batch)
        finally:
            committer.close()

    def _write(self, batch: list[_Pending]) -> None:
        """Commit ``batch`` and settle its callers; an event that cannot be stored fails alone."""
        entries: list[Prepared] = []
        owners: list[_Pending] = []
        refused: list[_Pending] = []
        errors: list[HubError] = []
        for pending in batch:
            try:
                entries.append(prepare(pending.event))
            except (TypeError, ValueError, ArithmeticError) as exc:
                refused.append(pending)
                errors.append(ValidationError(t("errors.writer.usage_event_refused_ledger", exc=exc)))
                continue
            owners.append(pending)
        if refused:
            self._settle(refused, errors)
        if entries:
            results = self._committer.commit(entries)
            self._settle(owners, [r if isinstance(r, HubError) else Receipt(*r) for r in results])

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
