"""The usage ledger's writer in its own process, so the hub's event loop and the writer never
share a GIL; and the hub's side of its pipe, which starts a new writer when one dies.

In one process the writer thread must win the GIL back from the busy event loop after every
SQLite call; under load each of those waits can last CPython's switch interval (5 ms), so a
group commit whose fsync takes 0.3 ms took ~4 ms, and every caller waits for its batch.  Here
the writer (``Committer``, the same group commit as ``UsageLedger``'s) runs in a child process
(child.py) with no event loop: one thread reads the pipe, one commits and answers.

    hub                                         child (python -m daemon.metering.ledger.process)
    LedgerProcess.append(event) ── msgpack ──>  reader thread: frames -> prepared events
                                                writer thread: group commit (one fsync a batch)
                                <── msgpack ──  the batch's receipts, one frame, after its commit

Acknowledged still means committed: the child answers only after the batch's commit.  If the
hub dies (even kill -9) the child reads EOF, commits what it holds and exits.

If the child dies, the hub starts a new one, which opens the file at its last committed entry,
so the chain goes on from there.  Events sent to the dead child and not answered stay pending
and are sent again as replays: the new child answers a replay with the entry the dead one
committed, if it did (same event id), and appends it otherwise.  So a call whose writer died
under it still gets its receipt, billed exactly once, and nothing is acknowledged before it
is committed.  While no writer is up, new calls get 503 UNAVAILABLE with Retry-After and
``healthy`` is False (/ready answers 503).  If no writer is back within
``restart_within_s``, the pending calls fail UNAVAILABLE and ``on_lost`` tells the hub,
which exits non-zero so its service manager restarts it whole.

The events of one loop iteration cross the pipe in one write (``FrameBatch``), and the child's
receipts come back the same way: one syscall per iteration, not per call.  At most
``max_pending`` events wait for a receipt, which also bounds what the pipe's buffer holds: past
that a call gets 503 with Retry-After, never an unbounded buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
from prometheus_client import CollectorRegistry, Counter, generate_latest

from daemon.core.envelope import Receipt
from daemon.core.errors import ERRORS_BY_CODE, HubError, Unavailable
from daemon.core.i18n import t
from daemon.metering.ledger.child import DONE, FrameBatch, pack_event
from daemon.metering.ledger.events import UsageEvent, open_account_event, top_up_event
from daemon.metering.ledger.totals import UsageTotals, read_balance, read_totals
from daemon.runtime.config import LedgerConfig

log = logging.getLogger("democratic_ai.ledger")

#: how long the child may take to open the ledger (a large file is read once for balances)
START_TIMEOUT_S = 60.0
#: the first pause between restart attempts; it doubles up to RESTART_BACKOFF_MAX_S
RESTART_BACKOFF_S = 0.05
RESTART_BACKOFF_MAX_S = 1.0
#: a writer whose pipe closed gets this long to exit by itself before it is killed
REAP_GRACE_S = 1.0
#: what a call refused while the writer is down or behind is told to wait, in seconds
RETRY_AFTER_S = 1.0


@dataclass(slots=True)
class _Sent:
    """An event sent to the writer and not yet answered: kept, so it can be sent again."""

    event: UsageEvent
    future: asyncio.Future[Receipt]


class LedgerProcess:
    """The hub's side: the same calls as ``UsageLedger`` that the hub makes, over a pipe.

    ``clock`` (wall clock seconds) stamps the events this side makes itself (``open_account``);
    ``on_lost`` is called once, with the reason, when no writer could be started again in time.
    """

    def __init__(self, path: str | Path, config: LedgerConfig | None = None, *,
                 clock: Callable[[], float] = time.time,
                 on_lost: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.config = config or LedgerConfig()
        self._clock = clock
        self._on_lost = on_lost
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._pending: dict[int, _Sent] = {}
        #: the running child's outgoing events of this loop iteration (None while none is up)
        self._batch: FrameBatch | None = None
        #: called after each committed batch (a site's usage sync wakes on it); must be cheap, on the loop
        self.on_committed: Callable[[], None] | None = None
        self._next_id = 0
        #: one msgpack Packer for the events this side sends (``packb`` makes a new one per call)
        self._pack: Callable[[Any], bytes] = msgpack.Packer().pack
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it was entered in
        self._balances: dict[str, Decimal] = {}
        self._metrics = b""
        self._up = False  # a child is ready and has not exited
        self._closing = False
        self._lost: str | None = None
        #: the child's writer connection, as SQLite reports it: {"journal_mode", "synchronous"}
        self.durability: dict[str, str] = {}
        self._registry = CollectorRegistry()
        self._m_restarts = Counter("democratic_ai_ledger_restarts", "Ledger writer processes started again "
                                   "after one died", registry=self._registry)

    # -- lifecycle ------------------------------------------------------------------------------
    async def __aenter__(self) -> LedgerProcess:
        self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._spawn(START_TIMEOUT_S)  # the first start's failure stops the hub's start
        self._supervisor = asyncio.create_task(self._supervise(), name="ledger-process-supervisor")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the child's stdin: it commits what it holds, answers, and exits."""
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        if self._batch is not None:
            self._batch.flush()  # what was appended before the close is the child's to commit
        process, self._process = self._process, None
        self._up = False
        if process is not None:
            await self._reap(process, self._reader, kill=False)
        self._fail_pending("the usage ledger closed before the event was answered")

    @property
    def healthy(self) -> bool:
        """A child is running and ready: calls can be billed."""
        return self._up and not self._closing

    @property
    def pid(self) -> int | None:
        """The running writer process's id; None while none is up."""
        return self._process.pid if self._process is not None and self._up else None

    @property
    def pending(self) -> int:
        """Events sent to the writer that have no answer yet (at most ``config.max_pending``)."""
        return len(self._pending)

    async def _spawn(self, open_within_s: float) -> None:
        """Start a child and wait until it has opened the ledger; Unavailable when it cannot."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon.metering.ledger.process", str(self.path), json.dumps(asdict(self.config)),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        ready = asyncio.get_running_loop().create_future()
        reader = asyncio.create_task(self._read(process.stdout, ready), name="ledger-process-reader")
        try:
            async with asyncio.timeout(open_within_s):
                await ready
        except BaseException as exc:
            # a child that reported its failure exits by itself; a stuck one is not waited for
            await self._reap(process, reader, kill=not isinstance(exc, HubError))
            if isinstance(exc, TimeoutError):
                raise Unavailable(t("errors.process.ledger_writer_did_not_2", path=self.path,
                                    open_within_s=open_within_s)) from None
            raise
        self._batch = FrameBatch(lambda data: self._write(process, data))
        self._process, self._reader, self._up = process, reader, True

    def _write(self, process: asyncio.subprocess.Process, data: bytes) -> None:
        """A batch of events, to ``process`` if it is still the running writer.

        If it died since they were queued the batch is dropped: its events are still pending, and
        the next writer gets them once, as replays.
        """
        if process is self._process and process.stdin is not None:
            process.stdin.write(data)

    @staticmethod
    async def _reap(process: asyncio.subprocess.Process, reader: asyncio.Task[None] | None, *,
                    kill: bool) -> None:
        if kill and process.returncode is None:
            # most often it is dead already: let its exit be collected first (killing a zombie
            # races the child watcher for its status)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), REAP_GRACE_S)
        if kill and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        if process.stdin is not None:
            with contextlib.suppress(ConnectionError):
                process.stdin.close()
        # shield: a cancelled shutdown still lets the child finish the batch it holds
        await asyncio.shield(process.wait())
        if reader is not None:
            await asyncio.gather(reader, return_exceptions=True)

    async def _supervise(self) -> None:
        """Wait for the child to exit; start another within ``restart_within_s`` or give up."""
        while True:
            assert self._reader is not None and self._process is not None
            await asyncio.wait({self._reader})  # wait, not await: never cancel the reader from here
            if self._closing:
                return
            self._up = False
            dead, self._process = self._process, None
            # make sure it is gone before another writer answers for the events it was sent
            await self._reap(dead, self._reader, kill=True)
            log.error("the ledger writer process exited (code %s); starting a new one", dead.returncode,
                      extra={"pending": len(self._pending)})
            try:
                await self._restart()
            except Unavailable as exc:
                self._give_up(exc.message)
                return
            self._m_restarts.inc()
            log.warning("the ledger writer process is back", extra={"replayed": len(self._pending)})

    async def _restart(self) -> None:
        loop = asyncio.get_running_loop()
        bound = self.config.restart_within_s
        deadline, delay, reason = loop.time() + bound, RESTART_BACKOFF_S, "no attempt"
        while (left := deadline - loop.time()) > 0:
            try:
                await self._spawn(min(left, START_TIMEOUT_S))
            except (Unavailable, OSError) as exc:
                reason = exc.message if isinstance(exc, HubError) else str(exc)
                await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
                delay = min(delay * 2, RESTART_BACKOFF_MAX_S)
                continue
            await self._replay()
            return
        raise Unavailable(t("errors.process.ledger_writer_did_not", bound=bound, reason=reason))

    async def _replay(self) -> None:
        """Send the new child every event the dead one did not answer, marked as a replay."""
        assert self._process is not None and self._process.stdin is not None
        stdin = self._process.stdin
        for request_id, sent in sorted(self._pending.items()):
            if sent.future.done():  # its caller gave up: billed at most once, never acknowledged
                del self._pending[request_id]
                continue
            stdin.write(pack_event(request_id, sent.event, replay=True))
        with contextlib.suppress(ConnectionError):  # died again: the supervisor sees it next
            await stdin.drain()

    def _give_up(self, reason: str) -> None:
        self._lost = reason
        log.critical("the usage ledger is lost: %s", reason)
        self._fail_pending(reason)
        if self._on_lost is not None:
            self._on_lost(reason)

    def _fail_pending(self, reason: str) -> None:
        for sent in self._pending.values():
            if not sent.future.done():
                sent.future.set_exception(Unavailable(t("errors.process.call_not_billed", reason=reason)))
        self._pending.clear()

    # -- what the hub calls ----------------------------------------------------------------------
    async def append(self, event: UsageEvent, *, validated: bool = False) -> Receipt:
        """Send one event to the child; returns its receipt once the child's batch committed."""
        if not validated:
            event.validate()
        process = self._process
        if not self.healthy or process is None or process.stdin is None:
            why = self._lost or ("closed" if self._closing else "its writer process is restarting")
            raise Unavailable(t("errors.process.usage_ledger_not_available", why=why), retry_after=RETRY_AFTER_S)
        if len(self._pending) >= self.config.max_pending:
            raise Unavailable(t("errors.process.usage_ledger_behind_events", count=len(self._pending)),
                              retry_after=RETRY_AFTER_S)
        assert self._batch is not None and self._loop is not None  # set with the running child
        self._next_id += 1
        future: asyncio.Future[Receipt] = self._loop.create_future()
        self._pending[self._next_id] = _Sent(event, future)
        # written with the others of this loop iteration; if the writer dies first the event stays
        # pending, and the next writer gets it as a replay
        self._batch.add(pack_event(self._next_id, event, pack=self._pack))
        # if the caller is cancelled the event may still commit: billed but unacknowledged,
        # never acknowledged but unbilled
        return await future

    async def top_up(self, tenant_id: str, amount: Decimal | str | int, actor: str) -> Receipt:
        """Add prepaid credits (a ledger event); the first top-up makes the tenant prepaid."""
        return await self.append(top_up_event(tenant_id, amount, actor, self._clock()))

    async def open_account(self, tenant_id: str, actor: str) -> Receipt:
        """Make a tenant prepaid with a balance of 0: its calls are refused until a top-up."""
        return await self.append(open_account_event(tenant_id, actor, self._clock()))

    def balance(self, tenant_id: str) -> Decimal | None:
        """The balance the child last reported, or None when the tenant is not prepaid."""
        return self._balances.get(tenant_id)

    async def refresh_balance(self, tenant_id: str) -> Decimal | None:
        """Re-read one balance from the file (a CLI top-up may not have been reported yet)."""
        value = await asyncio.to_thread(read_balance, self.path, tenant_id)
        if value is not None:
            self._balances[tenant_id] = value
        return value

    async def totals(self, tenant_id: str, start: datetime, end: datetime) -> UsageTotals:
        """Sums of the tenant's usage in [start, end), read from the file in a worker thread."""
        return await asyncio.to_thread(read_totals, self.path, tenant_id, start, end)

    def metrics_text(self) -> bytes:
        """The writer's own samples (commit latency, batch sizes, events) and its restarts, for /metrics."""
        return self._metrics + generate_latest(self._registry)

    # -- the child's answers ---------------------------------------------------------------------
    async def _read(self, stdout: asyncio.StreamReader, ready: asyncio.Future[None]) -> None:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        while chunk := await stdout.read(65536):
            unpacker.feed(chunk)
            for frame in unpacker:
                self._on_frame(frame, ready)
        if not ready.done():
            ready.set_exception(Unavailable(t("errors.process.ledger_writer_process_exited")))
        # a running child's exit is the supervisor's: it starts another and replays what is pending

    def _on_frame(self, frame: list[Any], ready: asyncio.Future[None]) -> None:
        kind = frame[0]
        if kind == DONE:
            self._on_done(frame[1], frame[2])
        elif kind == "ready":
            self._balances = {t: Decimal(b) for t, b in frame[1].items()}
            self.durability = dict(frame[2])
            ready.set_result(None)
        elif kind == "failed":
            if not ready.done():
                ready.set_exception(Unavailable(t("errors.relayed", message=frame[1])))
        elif kind == "balances":
            self._balances = {t: Decimal(b) for t, b in frame[1].items()}
        elif kind == "metrics":
            self._metrics = frame[1]
        else:  # [id, 0, code, message]: that event was refused
            sent = self._pending.pop(kind, None)
            if sent is not None and not sent.future.done():
                _, _, code, message = frame
                sent.future.set_exception(ERRORS_BY_CODE.get(code, Unavailable)(message))

    def _on_done(self, answers: list[Any], balances: dict[str, str]) -> None:
        """One committed batch: the balances after it first, then each caller's receipt."""
        for tenant_id, balance in balances.items():
            self._balances[tenant_id] = Decimal(balance)
        pop = self._pending.pop
        for i in range(0, len(answers), 3):
            sent = pop(answers[i], None)
            if sent is not None and not sent.future.done():
                sent.future.set_result(Receipt(answers[i + 1], answers[i + 2]))
        if self.on_committed is not None:
            self.on_committed()


if __name__ == "__main__":
    from daemon.metering.ledger.child import main

    main()
