"""The ledger writer's own process, and the msgpack frames that cross its pipe.

``python -m daemon.metering.ledger.process PATH CONFIG_JSON`` runs ``main`` here: two threads and
no event loop.  The main thread reads the pipe and turns every frame of a read into a prepared
event (``Prepared``: no ``UsageEvent``, no future); it hands the whole read to the writer thread
at once.  The writer thread owns the ledger's write connection (``Committer``): it gathers a
batch as the in-process writer does (``batch_max`` events, ``batch_delay_ms``), commits it with
one fsync, and writes the receipts of the whole batch to the pipe in one frame, itself.  The
reads go on while a commit's fsync runs, so the next batch is ready when it returns.

    hub -> child   [id, *event fields, credits]             append, answer after the commit
                   ["replay", id, *event fields, credits]   sent to a writer that died: answer with the
                                                            committed entry if it landed, else append it
    child -> hub   ["ready", {tenant: balance}, {"journal_mode", "synchronous"}]
                   ["failed", message]                      the ledger cannot be opened
                   ["done", [id, seq, hash, id, seq, hash, ...], {tenant: balance}]
                                                            committed: one frame per batch, with the
                                                            balances of its prepaid tenants after it
                   [id, 0, code, message]                   that event was refused
                   ["balances", {...}]                      an idle check saw another writer
                   ["metrics", text]                        the writer's own Prometheus samples

The events come from the hub, which validated them (``UsageEvent.validate``): the child only
converts them, and a frame it cannot convert is refused alone.  The child ignores SIGINT/SIGTERM
(systemd and a terminal signal the whole group): it ends when the hub closes its stdin, after
committing and answering everything the hub sent.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
from prometheus_client import CollectorRegistry, generate_latest

from daemon.core.errors import HubError, ValidationError
from daemon.metering.ledger.chain import Prepared, canonical_units
from daemon.metering.ledger.commit import Committed, Committer
from daemon.metering.ledger.events import UsageEvent
from daemon.runtime.config import LedgerConfig

log = logging.getLogger("democratic_ai.ledger")

#: how often the child looks for balance changes made by other processes (a CLI top-up) ...
BALANCE_CHECK_S = 0.1
#: ... and reports its metrics
METRICS_EVERY = 5  # balance checks
#: how long the writer must have been idle before it looks for entries another process committed
IDLE_CHECK_S = 0.5
#: group commit: a gap in arrivals this long ends a batch early (batch_delay_ms still caps it)
LINGER_S = 0.0005
READ_SIZE = 1 << 16
REPLAY = "replay"
DONE = "done"
#: an event frame: the request id and these fields, then the credits as text
FIELD_COUNT = 16
_new = tuple.__new__


def pack_event(request_id: int, event: UsageEvent, *, replay: bool = False,
               pack: Callable[[Any], bytes] = msgpack.packb) -> bytes:
    """One event as the hub sends it; ``replay``: it went to a writer that died before answering.

    ``pack``: a ``msgpack.Packer().pack`` of the caller's, kept for its thread (``packb`` builds
    a Packer per call, half of this function's cost); the bytes are the same.
    """
    e = event
    frame = [request_id, e.tenant_id, e.subject, e.action, e.module, e.plan, e.kind, e.api_calls, e.compute_ms,
             e.bytes_in, e.bytes_out, dict(e.units), e.ts, e.trace_id, e.event_id, str(e.credits)]
    return pack([REPLAY, *frame] if replay else frame)


def prepare_frame(frame: list[Any]) -> Prepared:
    """``pack_event``'s frame (without a replay mark) as its entry will store it.

    The same conversions as ``chain.prepare`` of the ``UsageEvent`` the hub packed, so the entry is
    the same; TypeError/ValueError/ArithmeticError for a frame that is not one.
    """
    (_, tenant_id, subject, action, module, plan, kind, api_calls, compute_ms, bytes_in, bytes_out, units, ts,
     trace_id, event_id, credits) = frame
    if credits != "0":  # the hub sends str(Decimal): zero (postpaid) is "0"
        amount = Decimal(credits)
        if not amount.is_finite():
            raise ValueError(f"credits {credits!r} is not a finite number")
        credits = str(amount) if amount else "0"
    if ts and not isinstance(ts, int | float):  # (a string would be multiplied, not refused)
        raise TypeError(f"ts {ts!r} is not a number")
    # tuple.__new__: a NamedTuple's own __new__ is a Python function, a frame per event
    return _new(Prepared, (event_id, kind, tenant_id, subject, plan, action, module, int(api_calls),
                           float(compute_ms), int(bytes_in), int(bytes_out), canonical_units(units) if units else "{}",
                           credits, round(ts * 1_000_000) if ts else None, trace_id))


class FrameBatch:
    """Frames for one pipe, written together once per loop iteration (the hub's side).

    One write (one syscall, one wake-up of the reader) for every frame of that iteration instead
    of one each: under load, the events of all the calls that finished in one iteration cross the
    pipe together.  What is written is bounded by the sender, not here: the hub holds at most
    ``max_pending`` events.
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


class _Pipe:
    """The child's stdout, written whole frames at a time by either thread (blocking writes).

    A hub that stops reading holds the writer once the pipe's buffer is full: it is the hub that
    waits for those receipts.  A hub that is gone (EPIPE) is not written to again, but the writer
    goes on committing what it was sent.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._gone = False

    def send(self, data: bytes) -> None:
        with self._lock:
            if self._gone:
                return
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError:  # EPIPE: the hub is gone; nobody is left to answer
                self._gone = True


# a job: (request id, the event, whether it is a replay)
_Job = tuple[int, Prepared, bool]
_STOP = object()


class _Writer:
    """The writer thread: group commits of what the reader hands over, receipts straight to the pipe."""

    def __init__(self, committer: Committer, config: LedgerConfig, registry: CollectorRegistry, out: _Pipe) -> None:
        self._committer = committer
        self._config = config
        self._registry = registry
        self._out = out
        self.jobs: queue.SimpleQueue[list[_Job] | object] = queue.SimpleQueue()
        self._reported = dict(committer.balances)
        self._checks = 0
        self._pack: Callable[[Any], bytes] = msgpack.Packer().pack  # this thread's own

    def run(self) -> None:
        """Until the reader's stop: batches in, receipts out; then the last batches, answered."""
        jobs = self.jobs
        delay = self._config.batch_delay_ms / 1000.0
        batch_max = self._config.batch_max
        next_report = idle_since = time.monotonic()
        next_report += BALANCE_CHECK_S
        pending: list[_Job] = []  # read, not yet in a batch (a read can hold more than batch_max)
        stop = False
        while pending or not stop:
            if not pending:
                try:
                    first = jobs.get(timeout=max(0.0, next_report - time.monotonic()))
                except queue.Empty:
                    first = None
                if first is _STOP:
                    break
                if first is not None:
                    pending = first  # type: ignore[assignment]
            now = time.monotonic()
            if pending:
                deadline = now + delay
                while len(pending) < batch_max and not stop:
                    try:
                        more = jobs.get_nowait()
                    except queue.Empty:
                        # linger for stragglers of the same burst, not the full delay: once
                        # arrivals pause for LINGER_S the burst is over and waiting only adds latency
                        wait = min(deadline - time.monotonic(), LINGER_S)
                        if wait <= 0:
                            break
                        try:
                            more = jobs.get(timeout=wait)
                        except queue.Empty:
                            break
                    if more is _STOP:
                        stop = True  # finish what was read first: the hub is owed an answer
                        break
                    pending.extend(more)  # type: ignore[arg-type]
                if len(pending) > batch_max:
                    batch, pending = pending[:batch_max], pending[batch_max:]
                else:
                    batch, pending = pending, []
                self._write(batch)
                now = idle_since = time.monotonic()
            elif now - idle_since >= IDLE_CHECK_S:
                self._committer.notice_other_writers()
                idle_since = now
            if now >= next_report:
                self._report()
                next_report = now + BALANCE_CHECK_S

    def _write(self, batch: list[_Job]) -> None:
        """Commit ``batch``; its receipts in one frame, each refusal in its own."""
        committer = self._committer
        ids: list[int] = []
        entries: list[Prepared] = []
        answers: list[Any] = []
        tenants: set[str] = set()
        for request_id, entry, replay in batch:
            if replay:
                # a replayed event may have been committed by the writer that died: never twice
                found = committer.find(entry.event_id)
                if found is not None:
                    answers += (request_id, *found)
                    tenants.add(entry.tenant_id)
                    continue
            ids.append(request_id)
            entries.append(entry)
        frames: list[bytes] = []
        if entries:
            results: list[Committed | HubError] = committer.commit(entries)
            for request_id, entry, result in zip(ids, entries, results, strict=True):
                if type(result) is tuple:
                    answers += (request_id, *result)
                    tenants.add(entry.tenant_id)
                else:
                    assert isinstance(result, HubError)
                    frames.append(self._pack([request_id, 0, result.code, result.message]))
        if answers:
            balances = committer.balances
            known = {t: str(balances[t]) for t in tenants if t in balances}
            frames.append(self._pack([DONE, answers, known]))
        self._out.send(b"".join(frames))

    def _report(self) -> None:
        self._checks += 1
        if self._checks % METRICS_EVERY == 1:
            self._out.send(msgpack.packb(["metrics", generate_latest(self._registry)]))
        balances = self._committer.balances
        if balances != self._reported:  # a commit or the idle check saw another process write
            self._reported = dict(balances)
            self._out.send(msgpack.packb(["balances", {t: str(b) for t, b in self._reported.items()}]))


def _request_id(frame: object) -> Any:
    """The id a frame that could not be read claims, to refuse it by (0 when it claims none)."""
    if not isinstance(frame, list) or not frame:
        return 0
    if frame[0] == REPLAY:
        return frame[1] if len(frame) > 1 else 0
    return frame[0]


def _relay(stdin: int, writer: _Writer, out: _Pipe) -> None:
    """Read the hub's frames until it closes the pipe; every read goes to the writer as one list."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    put = writer.jobs.put
    while chunk := os.read(stdin, READ_SIZE):
        unpacker.feed(chunk)
        jobs: list[_Job] = []
        for frame in unpacker:
            try:
                if len(frame) == FIELD_COUNT:
                    jobs.append((frame[0], prepare_frame(frame), False))
                elif frame[0] == REPLAY:
                    jobs.append((frame[1], prepare_frame(frame[1:]), True))
                else:
                    raise ValueError(f"a frame of {len(frame)} fields is not an event")
            except (TypeError, ValueError, ArithmeticError, KeyError, IndexError) as exc:
                out.send(msgpack.packb([_request_id(frame), 0, ValidationError.code, str(exc)]))
        if jobs:
            put(jobs)


def _or_exit(run: Callable[[], None]) -> None:
    """The writer thread: a bug that ends it ends the process, so the hub starts a new writer and
    replays what this one did not answer, instead of waiting for receipts nobody will write."""
    try:
        run()
    except BaseException:
        log.critical("the ledger writer thread failed; exiting", exc_info=True)
        os._exit(70)


def _serve(path: Path, config: LedgerConfig) -> int:
    out = _Pipe(sys.stdout.fileno())
    registry = CollectorRegistry()
    committer = Committer(path, registry)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        committer.open()
    except Exception as exc:  # told to the hub, which refuses to start (or retries) with the reason
        out.send(msgpack.packb(["failed", f"cannot open the usage ledger {path}: {exc}"]))
        return 1
    try:
        out.send(msgpack.packb(["ready", {t: str(b) for t, b in committer.balances.items()}, committer.durability]))
        writer = _Writer(committer, config, registry, out)
        thread = threading.Thread(target=_or_exit, args=(writer.run,), name="usage-ledger-writer")
        thread.start()
        code = 0
        try:
            _relay(sys.stdin.fileno(), writer, out)
        except Exception:  # bytes that are not msgpack: the stream cannot be resynchronised
            log.exception("the ledger writer cannot read the hub's frames; ending after what it holds")
            code = 1
        finally:
            # the hub is gone or closing: everything it sent is committed and answered before we leave
            writer.jobs.put(_STOP)
            thread.join()
        return code
    finally:
        committer.close()


def main() -> None:
    """The child's entry point: ``python -m daemon.metering.ledger.process PATH CONFIG_JSON``."""
    # the hub's terminal or systemd signal the whole group: we end when the hub closes our stdin
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    path, config = Path(sys.argv[1]), LedgerConfig(**json.loads(sys.argv[2]))
    # every event makes a few short-lived tuples, which trigger the cyclic collector; its full
    # passes would walk every object the imports made, again and again: those are set aside
    gc.freeze()
    sys.exit(_serve(path, config))
