"""The ledger writer's own process, and the msgpack frames that cross its pipe.

``python -m daemon.metering.ledger.process PATH CONFIG_JSON`` runs ``main`` here: one
``UsageLedger`` and a loop that only relays frames.

    hub -> child   [id, *event fields, credits]             append, answer after the commit
                   ["replay", id, *event fields, credits]   sent to a writer that died: answer with the
                                                            committed entry if it landed, else append it
    child -> hub   ["ready", {tenant: balance}, {"journal_mode", "synchronous"}]
                   ["failed", message]                      the ledger cannot be opened
                   [id, 1, seq, hash, tenant, balance] | [id, 0, code, message]
                   ["balances", {...}]                      an idle check saw another writer
                   ["metrics", text]                        the writer's own Prometheus samples

The child ignores SIGINT/SIGTERM (systemd and a terminal signal the whole group): it ends when
the hub closes its stdin, after committing and answering everything the hub sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import signal
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
from prometheus_client import CollectorRegistry, generate_latest

from daemon.core.envelope import Receipt
from daemon.core.errors import HubError, ValidationError
from daemon.metering.ledger.events import UsageEvent
from daemon.metering.ledger.totals import find_receipt
from daemon.metering.ledger.writer import UsageLedger
from daemon.runtime.config import LedgerConfig

log = logging.getLogger("democratic_ai.ledger")

#: how often the child looks for balance changes made by other processes (a CLI top-up) ...
BALANCE_CHECK_S = 0.1
#: ... and reports its metrics
METRICS_EVERY = 5  # balance checks
REPLAY = "replay"
_FIELDS = ("tenant_id", "subject", "action", "module", "plan", "kind", "api_calls", "compute_ms", "bytes_in",
           "bytes_out", "units", "ts", "trace_id", "event_id")


def pack_event(request_id: int, event: UsageEvent, *, replay: bool = False) -> bytes:
    """One event as the hub sends it; ``replay``: it went to a writer that died before answering."""
    e = event
    frame = [request_id, e.tenant_id, e.subject, e.action, e.module, e.plan, e.kind, e.api_calls, e.compute_ms,
             e.bytes_in, e.bytes_out, dict(e.units), e.ts, e.trace_id, e.event_id, str(e.credits)]
    return msgpack.packb([REPLAY, *frame] if replay else frame)


class FrameBatch:
    """Frames for one pipe, written together once per loop iteration.

    One write (one syscall, one wake-up of the reader) for every frame of that iteration instead
    of one each: under load, the events of all the calls that finished in one iteration (or the
    receipts of one group commit) cross the pipe together.  What is written is bounded by the
    sender, not here: the hub holds at most ``max_pending`` events, the child answers only those.
    """

    __slots__ = ("_frames", "_loop", "_write")

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._frames: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def add(self, frame: bytes) -> None:
        """Queue ``frame``; it is written at the end of this loop iteration, after those queued before it."""
        if not self._frames:
            self._loop.call_soon(self.flush)
        self._frames.append(frame)

    def flush(self) -> None:
        """Write what is queued now (also called by the scheduled callback; nothing queued: nothing written)."""
        frames = self._frames
        if frames:
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            frames.clear()
            self._write(data)


def unpack_event(frame: list[Any]) -> tuple[int, UsageEvent, bool]:
    """``pack_event``'s frame back: request id, event, and whether it is a replay."""
    replay = bool(frame) and frame[0] == REPLAY
    request_id, *values, credits = frame[1:] if replay else frame
    event = UsageEvent(**dict(zip(_FIELDS, values, strict=True)), credits=Decimal(credits))
    return request_id, event, replay


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
        except Exception as exc:  # told to the hub, which refuses to start (or retries) with the reason
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
    stdout.write(msgpack.packb(["ready", {t: str(b) for t, b in balances.items()}, ledger.durability]))
    calls: set[asyncio.Future[Any]] = set()
    # every frame after "ready" goes through the batch, so they reach the hub in the order sent
    out = FrameBatch(stdout.write)

    def send(frame: list[Any]) -> None:
        out.add(msgpack.packb(frame))

    def answer(request_id: int, tenant_id: str, done: asyncio.Future[Receipt]) -> None:
        if done.cancelled():
            return  # only a loop torn down under us cancels one; nobody is left to answer
        exc = done.exception()
        if isinstance(exc, HubError):
            send([request_id, 0, exc.code, exc.message])
        elif exc is not None:
            log.error("ledger append %d failed", request_id, exc_info=exc)
        else:
            receipt, balance = done.result(), ledger.balance(tenant_id)
            send([request_id, 1, receipt.seq, receipt.hash, tenant_id, None if balance is None else str(balance)])

    async def replayed(event: UsageEvent) -> Receipt:
        # a replayed event may have been committed by the writer that died: never twice
        receipt = await asyncio.to_thread(find_receipt, ledger.path, event.event_id)
        return receipt if receipt is not None else await ledger.append(event, validated=True)

    async def report() -> None:
        nonlocal balances
        for tick in itertools.count():
            await asyncio.sleep(BALANCE_CHECK_S)
            if tick % METRICS_EVERY == 0:
                send(["metrics", generate_latest(registry)])
            if ledger.balances() != balances:  # the writer's idle check saw another process write
                balances = ledger.balances()
                send(["balances", {t: str(b) for t, b in balances.items()}])
            with contextlib.suppress(ConnectionError):  # the hub is gone: nobody is left to answer
                await stdout.drain()  # a hub that stops reading holds the reporter, never the commits

    reporter = asyncio.create_task(report())
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    while chunk := await stdin.read(65536):
        unpacker.feed(chunk)
        for frame in unpacker:
            try:
                request_id, event, replay = unpack_event(frame)
            except (TypeError, ValueError, ArithmeticError) as exc:
                request_id = frame[1] if frame and frame[0] == REPLAY and len(frame) > 1 else frame[0] if frame else 0
                send([request_id, 0, ValidationError.code, str(exc)])
                continue
            # no task per event: the writer's own future, answered from its done callback
            try:
                call = asyncio.ensure_future(replayed(event)) if replay else ledger.submit(event)
            except HubError as exc:
                send([request_id, 0, exc.code, exc.message])
                continue
            calls.add(call)
            call.add_done_callback(calls.discard)
            call.add_done_callback(functools.partial(answer, request_id, event.tenant_id))
    # the hub is gone or closing: everything it sent is committed before we leave
    if calls:
        await asyncio.gather(*calls, return_exceptions=True)
    reporter.cancel()
    await asyncio.gather(reporter, return_exceptions=True)
    out.flush()  # the last answers, before _serve drains stdout and exits


def main() -> None:
    """The child's entry point: ``python -m daemon.metering.ledger.process PATH CONFIG_JSON``."""
    # the hub's terminal or systemd signal the whole group: we end when the hub closes our stdin
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    path, config = Path(sys.argv[1]), LedgerConfig(**json.loads(sys.argv[2]))
    asyncio.run(_serve(path, config))
