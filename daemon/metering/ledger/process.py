"""The usage ledger's writer in its own process, so the hub's event loop and the writer never
share a GIL.

In one process the writer thread must win the GIL back from the busy event loop after every
SQLite call; under load each of those waits can last CPython's switch interval (5 ms), so a
group commit whose fsync takes 0.3 ms took ~4 ms, and every caller waits for its batch.  Here
the writer (``UsageLedger``, unchanged) runs in a child process whose loop only relays frames.

    hub                                         child (python -m daemon.metering.ledger.process)
    LedgerProcess.append(event) ── msgpack ──>  UsageLedger.append(event)   (group commit)
                                <── msgpack ──  [id, 1, seq, hash, tenant, balance] | [id, 0, code, message]
                                <── msgpack ──  ["balances", {...}] (an idle check saw another writer)
                                <── msgpack ──  ["metrics", text]  (the writer's own Prometheus samples)

Acknowledged still means committed: the child answers only after the batch's commit.  If the
hub dies (even kill -9) the child reads EOF, commits what it holds and exits; if the child
dies, calls fail UNAVAILABLE and /ready says so.  The child ignores SIGINT/SIGTERM (systemd and
a terminal signal the whole group): it ends when the hub closes its stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
from prometheus_client import CollectorRegistry, generate_latest

from daemon.core.envelope import Receipt
from daemon.core.errors import ERRORS_BY_CODE, HubError, Unavailable, ValidationError
from daemon.metering.ledger.events import UsageEvent
from daemon.metering.ledger.totals import UsageTotals, read_balance, read_totals
from daemon.metering.ledger.writer import UsageLedger
from daemon.runtime.config import LedgerConfig

log = logging.getLogger("democratic_ai.ledger")

#: how long the child may take to open the ledger (a large file is read once for balances)
START_TIMEOUT_S = 60.0
#: how often the child looks for balance changes made by other processes (a CLI top-up) ...
BALANCE_CHECK_S = 0.1
#: ... and reports its metrics
METRICS_EVERY = 5  # balance checks
_FIELDS = ("tenant_id", "subject", "action", "module", "plan", "kind", "api_calls", "compute_ms", "bytes_in",
           "bytes_out", "units", "ts", "trace_id", "event_id")


def _pack_event(request_id: int, event: UsageEvent) -> bytes:
    values = [getattr(event, name) for name in _FIELDS]
    values[_FIELDS.index("units")] = dict(event.units)
    return msgpack.packb([request_id, *values, str(event.credits)])


def _unpack_event(frame: list[Any]) -> tuple[int, UsageEvent]:
    request_id, *values, credits = frame
    return request_id, UsageEvent(**dict(zip(_FIELDS, values, strict=True)), credits=Decimal(credits))


class LedgerProcess:
    """The hub's side: the same calls as ``UsageLedger`` that the hub makes, over a pipe.

    ``clock`` (wall clock seconds) stamps the events this side makes itself (``open_account``).
    """

    def __init__(self, path: str | Path, config: LedgerConfig | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.config = config or LedgerConfig()
        self._clock = clock
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Receipt]] = {}
        self._next_id = 0
        self._balances: dict[str, Decimal] = {}
        self._metrics = b""
        self._failure: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    async def __aenter__(self) -> LedgerProcess:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon.metering.ledger.process", str(self.path), json.dumps(asdict(self.config)),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        assert self._process.stdout is not None
        ready = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(self._process.stdout, ready), name="ledger-process-reader")
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await ready
        except BaseException as exc:
            if self._process.returncode is None and not isinstance(exc, HubError):
                self._process.kill()  # stuck or interrupted: do not wait for it to open the file
            await self.aclose()
            if isinstance(exc, TimeoutError):
                raise Unavailable(f"the ledger writer did not open {self.path} in {START_TIMEOUT_S:g} s") from None
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the child's stdin: it commits what it holds, answers, and exits."""
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        with contextlib.suppress(ConnectionError):
            process.stdin.close()
        # shield: a cancelled shutdown still lets the child finish the batch it holds
        await asyncio.shield(process.wait())
        if self._reader is not None:
            await self._reader

    @property
    def healthy(self) -> bool:
        """The child is running and has not reported a failure: calls can be billed."""
        return self._process is not None and self._failure is None

    # -- what the hub calls ----------------------------------------------------------------------
    async def append(self, event: UsageEvent, *, validated: bool = False) -> Receipt:
        """Send one event to the child; returns its receipt once the child's batch committed."""
        if not validated:
            event.validate()
        process = self._process
        if process is None or process.stdin is None or self._failure is not None:
            raise Unavailable(f"the usage ledger is not available: {self._failure or 'closed'}")
        self._next_id += 1
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        process.stdin.write(_pack_event(self._next_id, event))
        # if the caller is cancelled the event may still commit: billed but unacknowledged,
        # never acknowledged but unbilled
        return await future

    async def open_account(self, tenant_id: str, actor: str) -> Receipt:
        """Make a tenant prepaid with a balance of 0: its calls are refused until a top-up."""
        return await self.append(UsageEvent(tenant_id=tenant_id, subject=actor, action="credits.open",
                                            kind="account", api_calls=0, ts=self._clock()))

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
        """The writer's own samples (commit latency, batch sizes, events), for /metrics."""
        return self._metrics

    # -- the child's answers ---------------------------------------------------------------------
    async def _read(self, stdout: asyncio.StreamReader, ready: asyncio.Future[None]) -> None:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        while chunk := await stdout.read(65536):
            unpacker.feed(chunk)
            for frame in unpacker:
                self._on_frame(frame, ready)
        self._failure = self._failure or "the ledger writer process exited"
        if not ready.done():
            ready.set_exception(Unavailable(self._failure))
        elif self._process is not None:
            log.error("the ledger writer process exited; calls answer UNAVAILABLE until the hub restarts")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(Unavailable(f"{self._failure}; the call may not be billed"))
        self._pending.clear()

    def _on_frame(self, frame: list[Any], ready: asyncio.Future[None]) -> None:
        kind = frame[0]
        if kind == "ready":
            self._balances = {t: Decimal(b) for t, b in frame[1].items()}
            ready.set_result(None)
        elif kind == "failed":
            self._failure = str(frame[1])
        elif kind == "balances":
            self._balances = {t: Decimal(b) for t, b in frame[1].items()}
        elif kind == "metrics":
            self._metrics = frame[1]
        else:
            future = self._pending.pop(kind, None)
            if future is None or future.done():
                return
            if frame[1]:
                _, _, seq, digest, tenant_id, balance = frame
                if balance is not None:
                    self._balances[tenant_id] = Decimal(balance)
                future.set_result(Receipt(seq, digest))
            else:
                _, _, code, message = frame
                future.set_exception(ERRORS_BY_CODE.get(code, Unavailable)(message))


# -- the child ---------------------------------------------------------------------------------------
async def _serve(path: Path, config: LedgerConfig) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout)
    stdout = asyncio.StreamWriter(transport, protocol, None, loop)
    registry = CollectorRegistry()
    async with contextlib.AsyncExitStack() as stack:
        try:
            ledger = await stack.enter_async_context(UsageLedger(path, config, registry))
        except Exception as exc:  # told to the hub, which refuses to start with the reason
            stdout.write(msgpack.packb(["failed", f"cannot open the usage ledger {path}: {exc}"]))
            await stdout.drain()
            return
        await _relay(ledger, registry, stdin, stdout)
        # leaving the stack closes the ledger: its last batch is committed before we exit
    with contextlib.suppress(ConnectionError):
        await stdout.drain()


async def _relay(ledger: UsageLedger, registry: CollectorRegistry, stdin: asyncio.StreamReader,
                 stdout: asyncio.StreamWriter) -> None:
    """Append what the hub sends, answer each after its commit, until the hub closes stdin."""
    balances = ledger.balances()
    stdout.write(msgpack.packb(["ready", {t: str(b) for t, b in balances.items()}]))
    calls: set[asyncio.Task[None]] = set()

    async def append(request_id: int, event: UsageEvent) -> None:
        try:
            receipt = await ledger.append(event, validated=True)
        except HubError as exc:
            stdout.write(msgpack.packb([request_id, 0, exc.code, exc.message]))
            return
        balance = ledger.balance(event.tenant_id)
        stdout.write(msgpack.packb([request_id, 1, receipt.seq, receipt.hash, event.tenant_id,
                                    None if balance is None else str(balance)]))

    async def report() -> None:
        nonlocal balances
        for tick in itertools.count():
            await asyncio.sleep(BALANCE_CHECK_S)
            if tick % METRICS_EVERY == 0:
                stdout.write(msgpack.packb(["metrics", generate_latest(registry)]))
            if ledger.balances() != balances:  # the writer's idle check saw another process write
                balances = ledger.balances()
                stdout.write(msgpack.packb(["balances", {t: str(b) for t, b in balances.items()}]))

    reporter = asyncio.create_task(report())
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    while chunk := await stdin.read(65536):
        unpacker.feed(chunk)
        for frame in unpacker:
            try:
                request_id, event = _unpack_event(frame)
            except (TypeError, ValueError) as exc:
                stdout.write(msgpack.packb([frame[0] if frame else 0, 0, ValidationError.code, str(exc)]))
                continue
            task = asyncio.create_task(append(request_id, event))
            calls.add(task)
            task.add_done_callback(calls.discard)
    # the hub is gone or closing: everything it sent is committed before we leave
    if calls:
        await asyncio.gather(*calls, return_exceptions=True)
    reporter.cancel()
    await asyncio.gather(reporter, return_exceptions=True)


def main() -> None:
    """The child's entry point: ``python -m daemon.metering.ledger.process PATH CONFIG_JSON``."""
    # the hub's terminal or systemd signal the whole group: we end when the hub closes our stdin
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    path, config = Path(sys.argv[1]), LedgerConfig(**json.loads(sys.argv[2]))
    asyncio.run(_serve(path, config))


if __name__ == "__main__":
    main()
