"""The site's side of the sync: push the ledger from the last seq the centre acknowledged, and remember the ack.

The ledger is the write-ahead log: the outbox keeps no copy of any row and never writes to the
ledger.  All it keeps is ``<state dir>/sync/outbox.json`` (0600, directory 0700): the seq the
central node acknowledged, written (fsynced, atomically) only *after* the centre answered, so a
crash anywhere loses at most an ack, and a lost ack only means rows are sent again, which the
centre acknowledges idempotently.

Each round: read the ledger's head; if the centre has not acknowledged it, read up to
``batch_max`` rows after the ack (in a thread), seal them afresh (a new nonce each time: a
re-send is never a replay), send, and check the answer:

- above the last seq sent: the centre claims rows it was never given — refused as an error;
- at or below the ack held: never go back (a centre that lost rows must say so with an error);
  nothing progressed, so it counts as an error too;
- otherwise (all or part of the batch): recorded, and the next batch starts after it.

Errors back off exponentially with jitter (1 s to 60 s); a caught-up outbox waits
``interval_s``, or less when ``wake()`` says new rows were written.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from daemon.core.errors import HubError, Unavailable
from daemon.core.i18n import t
from daemon.runtime.files import atomic_write
from federation.fleet import NodeCertificate
from federation.identity import NodeIdentity
from federation.sync.batch import MAX_BATCH_BYTES, MAX_BATCH_ROWS, SEQ_INDEX, TS_US_INDEX, seal_batch

log = logging.getLogger("democratic_ai.federation.sync")

#: the outbox's state, under the state dir
OUTBOX_FILE = "sync/outbox.json"
#: the largest outbox file read back (it is a few hundred bytes)
MAX_STATE_BYTES = 64 << 10
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0
#: after ``wake()``, how long the outbox waits for more rows before it sends (a burst becomes one batch)
COALESCE_S = 0.2
#: how long a send may take before it counts as failed
SEND_TIMEOUT_S = 30.0
#: the longest error text kept (status, file)
MAX_ERROR = 1000

#: rows after a seq, at most a limit, in ledger column order: ``(seq_after, limit) -> rows``
ReadRows = Callable[[int, int], Sequence[Sequence[Any]]]
#: the ledger's head: ``() -> (seq, ts_us)``
ReadHead = Callable[[], tuple[int, int]]
#: a sealed batch to the centre: the seq it acknowledged, or a HubError
Send = Callable[[bytes], Awaitable[int]]


class SyncStateError(Exception):
    """The outbox file exists but cannot be read back; the message names the file."""


class AckRefused(Unavailable):
    """The central node's answer cannot be taken: an ack above the rows sent, one that goes back, or none new."""


@dataclass(frozen=True, slots=True)
class SyncState:
    """What the outbox remembers between runs: the centre's ack, and the last error, for ``sync status``.

    ``pending_ts_us``: the ``ts_us`` of the oldest row the centre has not acknowledged, when known
    (0 otherwise), so ``lag_seconds`` can be told without reading the ledger.
    """

    acked_seq: int = 0
    acked_at: float = 0.0
    head_seq: int = 0
    last_error: str | None = None
    central: str = ""
    error_at: float = 0.0
    pending_ts_us: int = 0

    @classmethod
    def load(cls, path: Path) -> SyncState:
        """The state in ``path``; a fresh one when the file is absent; SyncStateError when it is not ours."""
        try:
            with Path(path).open("rb") as handle:
                raw = handle.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise SyncStateError(f"cannot read {path}: {exc}") from None
        if len(raw) > MAX_STATE_BYTES:
            raise SyncStateError(f"{path} is over {MAX_STATE_BYTES} bytes: not the sync outbox's state")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise SyncStateError(f"{path} is not JSON: not the sync outbox's state") from None
        if not isinstance(data, dict):
            raise SyncStateError(f"{path} is not a JSON object")
        state = cls()
        values: dict[str, Any] = {}
        for name, default in asdict(state).items():
            value = data.get(name, default)
            if not _typed_like(value, name):
                raise SyncStateError(f"{path}: {name!r} has the wrong type")
            values[name] = value
        return cls(**values)

    def save(self, path: Path) -> None:
        """Write the state to ``path`` atomically and durably (0600, its directory 0700)."""
        path = Path(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.parent.chmod(0o700)  # mkdir leaves an existing directory's mode as it was
        atomic_write(path, (json.dumps(asdict(self), indent=2) + "\n").encode(), private=True)
        # the rename is durable only once the directory is: otherwise a crash could bring back the older ack
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _typed_like(value: Any, name: str) -> bool:
    if name == "last_error":
        return value is None or isinstance(value, str)
    if name == "central":
        return isinstance(value, str)
    if name in ("acked_at", "error_at"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return type(value) is int and value >= 0


class SyncOutbox:
    """Pushes this site's ledger to the central node; ``run`` is the hub's task, ``status`` its report."""

    def __init__(
        self,
        *,
        identity: NodeIdentity,
        cert: NodeCertificate | None,
        state_dir: Path,
        read_rows: ReadRows,
        head: ReadHead,
        send: Send,
        interval_s: float = 5.0,
        batch_max: int = 1000,
        clock: Callable[[], float] = time.time,
        central: str = "",
        rng: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        send_timeout_s: float = SEND_TIMEOUT_S,
    ) -> None:
        """``central``: the centre's node id, kept with its ack; an ack held for another centre is dropped.

        ``rng`` (jitter) and ``sleep`` (every wait) are for tests.  Raises SyncStateError when the
        outbox file is unreadable (never silently starts over: the operator decides).
        """
        if not 0 < batch_max <= MAX_BATCH_ROWS:
            raise ValueError(f"batch_max is 1 to {MAX_BATCH_ROWS}, not {batch_max}")
        if interval_s <= 0 or send_timeout_s <= 0:
            raise ValueError("interval_s and send_timeout_s must be positive")
        self.identity = identity
        self.cert = cert
        self.path = Path(state_dir) / OUTBOX_FILE
        self.interval_s = interval_s
        self.batch_max = batch_max
        self.central = central
        self._read_rows = read_rows
        self._head = head
        self._send = send
        self._clock = clock
        self._rng = rng
        self._sleep = sleep
        self._send_timeout_s = send_timeout_s
        self._woken = asyncio.Event()
        state = SyncState.load(self.path)
        if state.central and central and state.central != central:
            # another centre holds none of our rows: its ack means nothing for the new one
            log.warning("the central node changed: syncing from the start",
                        extra={"was": state.central, "central": central})
            state = SyncState(head_seq=state.head_seq)
        self._state = replace(state, central=central or state.central)
        self._head_ts_us = 0
        self._failures = 0

    # -- what others read --------------------------------------------------------------------
    @property
    def state(self) -> SyncState:
        """What the outbox holds now (the ack is the one on disk)."""
        return self._state

    def status(self) -> dict[str, Any]:
        """A site's ``sync status`` (the contract's keys): central, head_seq, acked_seq, lag_events, lag_seconds,
        last_error.
        """
        state = self._state
        lag_events = max(0, state.head_seq - state.acked_seq)
        lag_seconds = 0.0
        if lag_events:
            # the oldest row not acknowledged, when a read has seen it; else the head's (a lower bound)
            oldest_us = state.pending_ts_us or self._head_ts_us
            if oldest_us:
                lag_seconds = max(0.0, round(self._clock() - oldest_us / 1_000_000, 3))
        return {"central": state.central, "head_seq": state.head_seq, "acked_seq": state.acked_seq,
                "lag_events": lag_events, "lag_seconds": lag_seconds, "last_error": state.last_error}

    def wake(self) -> None:
        """New rows are in the ledger: end the wait between rounds now (call on the outbox's loop)."""
        self._woken.set()

    # -- the task ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Push until cancelled: batch after batch while behind, then one round each interval; back off on errors."""
        while True:
            try:
                behind = await self.push_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # recorded by push_once; whatever it was, the next round may succeed
                await self._sleep(self._backoff(exc))
                continue
            if not behind:
                await self._idle(self.interval_s)

    async def push_once(self) -> bool:
        """One round: send one batch if the centre is behind; whether rows remain unacknowledged after it.

        Raises what went wrong (the send's HubError, AckRefused, an error reading the ledger or
        writing the ack), after recording it as the last error; the ack on disk is then what it was.
        """
        try:
            behind = await self._push()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(exc)
            raise
        self._failures = 0
        return behind

    async def _push(self) -> bool:
        head_seq, head_ts_us = await asyncio.to_thread(self._head)
        self._head_ts_us = head_ts_us
        acked = self._state.acked_seq
        if head_seq != self._state.head_seq:
            self._state = replace(self._state, head_seq=head_seq)
        if head_seq <= acked:
            if self._state.pending_ts_us or self._state.last_error:
                await self._save(replace(self._state, pending_ts_us=0, last_error=None, error_at=0.0))
            return False
        rows = list(await asyncio.to_thread(self._read_rows, acked, self.batch_max))
        if not rows:
            raise Unavailable(t("errors.outbox.ledger_head_seq_but", head_seq=head_seq, acked=acked))
        if rows[0][SEQ_INDEX] != acked + 1:
            raise Unavailable(t("errors.outbox.ledger_read_after_seq", acked=acked, seq=rows[0][SEQ_INDEX]))
        self._state = replace(self._state, pending_ts_us=rows[0][TS_US_INDEX])
        sealed = seal_batch(self.identity, rows, self._clock(), cert=self.cert)
        while len(sealed) > MAX_BATCH_BYTES and len(rows) > 1:
            rows = rows[:len(rows) // 2]  # large rows: fewer per batch, so the centre reads it
            sealed = seal_batch(self.identity, rows, self._clock(), cert=self.cert)
        last_sent = rows[-1][SEQ_INDEX]
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that lands as the send ends
            async with asyncio.timeout(self._send_timeout_s):
                answer = await self._send(sealed)
        except TimeoutError:
            raise Unavailable(t("errors.outbox.central_node_did_not", send_timeout_s=self._send_timeout_s)) from None
        except HubError as exc:
            held = exc.details.get("acked")
            if exc.code != "CONFLICT" or exc.details.get("reason") != "gap" or type(held) is not int \
                    or not 0 <= held < acked:
                raise
            # the centre holds less than it once acknowledged (its central.db restored from a backup):
            # send again from there; what it still holds is compared, never stored twice
            log.warning("the central node holds fewer rows than it acknowledged: sending again from there",
                        extra={"acked": held, "held": acked})
            await self._save(replace(self._state, acked_seq=held, acked_at=self._clock()))
            return True
        new_ack = self._check_ack(answer, acked, last_sent)
        # the first row still unacknowledged, when it was in this batch: its time is the lag's start
        pending = rows[new_ack - acked][TS_US_INDEX] if new_ack < last_sent else 0
        await self._save(replace(self._state, acked_seq=new_ack, acked_at=self._clock(), last_error=None,
                                 error_at=0.0, pending_ts_us=pending))
        return new_ack < head_seq

    # -- helpers ---------------------------------------------------------------------------------
    # -- helpers ---------------------------------------------------------------------------------
    def _check_ack(self, answer: Any, acked: int, last_sent: int) -> int:
        """The centre's answer as the new ack, or AckRefused (a lie, or an ack that would go back)."""
        if type(answer) is not int:
            raise AckRefused(t("errors.outbox.central_node_answered_not", type_name=type(answer).__name__))
        if answer > last_sent:
            raise AckRefused(t("errors.outbox.central_node_acknowledged_seq", answer=answer, next_seq=acked + 1,
                               last_sent=last_sent), {"acked": answer, "last": last_sent})
        if answer < acked:
            log.warning("the central node acknowledged less than it did before: kept the ack held",
                        extra={"acked": answer, "held": acked})
            raise AckRefused(t("errors.outbox.central_node_acknowledged_seq_2", answer=answer, acked=acked),
                             {"acked": answer, "held": acked})
        if answer == acked:
            raise AckRefused(t("errors.outbox.central_node_acknowledged_none", next_seq=acked + 1, last_sent=last_sent),
                             {"acked": answer, "last": last_sent})
        return answer

    async def _save(self, state: SyncState) -> None:
        """Write ``state`` durably, then hold it: the ack in memory is never ahead of the one on disk."""
        await asyncio.to_thread(state.save, self.path)
        self._state = state

    async def _failed(self, exc: Exception) -> None:
        self._failures += 1
        message = exc.message if isinstance(exc, HubError) else f"{type(exc).__name__}: {exc}"
        message = message[:MAX_ERROR]
        if isinstance(exc, HubError):
            log.warning("sync to the central node failed", extra={"code": exc.code, "error": message})
        else:
            log.error("sync to the central node failed", exc_info=exc)
        state = replace(self._state, last_error=message, error_at=self._clock())
        try:
            await self._save(state)  # for `sync status` in another process; the ack in it is unchanged
        except OSError as write_error:
            log.error("cannot record the sync error", extra={"error": str(write_error)})
            self._state = state

    def _backoff(self, exc: Exception) -> float:
        """1, 2, 4 ... 60 s with jitter (half fixed, half random); at least a retry_after the centre gave."""
        ceiling = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** min(self._failures - 1, 16))
        delay = ceiling / 2 + self._rng() * ceiling / 2
        if isinstance(exc, HubError):
            retry_after = exc.details.get("retry_after")
            if isinstance(retry_after, int | float) and not isinstance(retry_after, bool):
                delay = max(delay, float(retry_after))
        return min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, delay))

    async def _idle(self, delay: float) -> None:
        """Wait ``delay`` or until ``wake()``, whichever is first; after a wake, gather a moment's rows."""
        if not self._woken.is_set():
            waiter = asyncio.ensure_future(self._woken.wait())
            sleeper = asyncio.ensure_future(self._sleep(delay))
            try:
                await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (waiter, sleeper):
                    task.cancel()
                # the children's own cancellation comes back as a result, never raised: ours still propagates
                await asyncio.gather(waiter, sleeper, return_exceptions=True)
        if self._woken.is_set():
            self._woken.clear()
            # woken by new rows: a short pause lets a burst of calls travel as one batch, not one each
            await self._sleep(min(COALESCE_S, delay))
