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
import itertools
import json
import logging
import signal
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
from prometheus_client import CollectorRegistry, generate_latest

from daemon.core.errors import HubError, ValidationError
from daemon.metering.ledger.events import UsageEvent
from daemon.metering.ledger.totals import find_receipt
from daemon.metering.ledger.writer import UsageLedger
from daemon.runtime.config import LedgerConfig

#: how often the child looks for balance changes made by other processes (a CLI top-up) ...
BALANCE_CHECK_S = 0.1
#: ... and reports its metrics
METRICS_EVERY = 5  # balance checks
REPLAY = "replay"
_FIELDS = ("tenant_id", "subject", "action", "module", "plan", "kind", "api_calls", "compute_ms", "bytes_in",
           "bytes_out", "units", "ts", "trace_id", "event_id")


def pack_event(request_id: int, event: UsageEvent, *, replay: bool = False) -> bytes:
    """One event as the hub sends it; ``replay``: it went to a writer that died before answering."""
    values = [getattr(event, name) for name in _FIELDS]
    values[_FIELDS.index("units")] = dict(event.units)
    frame = [request_id, *values, str(event.credits)]
    return msgpack.packb([REPLAY, *frame] if replay else frame)


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
    calls: set[asyncio.Task[None]] = set()

    async def send(frame: list[Any]) -> None:
        stdout.write(msgpack.packb(frame))
        with contextlib.suppress(ConnectionError):  # the hub is gone: nobody is left to answer
            await stdout.drain()

    async def append(request_id: int, event: UsageEvent, replay: bool) -> None:
        try:
            # a replayed event may have been committed by the writer that died: never twice
            receipt = await asyncio.to_thread(find_receipt, ledger.path, event.event_id) if replay else None
            if receipt is None:
                receipt = await ledger.append(event, validated=True)
        except HubError as exc:
            await send([request_id, 0, exc.code, exc.message])
            return
        balance = ledger.balance(event.tenant_id)
        await send([request_id, 1, receipt.seq, receipt.hash, event.tenant_id,
                    None if balance is None else str(balance)])

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
                request_id, event, replay = unpack_event(frame)
            except (TypeError, ValueError, ArithmeticError) as exc:
                request_id = frame[1] if frame and frame[0] == REPLAY and len(frame) > 1 else frame[0] if frame else 0
                stdout.write(msgpack.packb([request_id, 0, ValidationError.code, str(exc)]))
                continue
            task = asyncio.create_task(append(request_id, event, replay))
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
