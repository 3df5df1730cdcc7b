"""The audit queue: audit events wait here for the database writer, which takes them in batches.

An authentication failure or an admin call records an audit event on the request path;
the queue lets it return without waiting for the disk.  Bounded: when it is full (or not
running) ``put`` writes the event itself, so a flood slows callers down instead of
growing memory or dropping events.  One task drains it; ``aclose`` writes what is queued.
A batch that meets the database locked by another process (the CLI) is tried again a few
times before it is given up, logged.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable

from daemon.core.errors import Unavailable
from daemon.tenancy.records import AuditEvent

log = logging.getLogger(__name__)

AUDIT_QUEUE_MAX = 1024  # audit events waiting for the writer; beyond this callers wait for the write
AUDIT_BATCH_MAX = 256
LOCKED_TRIES = 5  # a batch meets a locked database this many times before it is given up


class AuditQueue:
    """Queued audit events, handed to ``write`` (which runs on the database writer) in batches."""

    def __init__(self, write: Callable[[list[AuditEvent]], Awaitable[None]]) -> None:
        self._write = write
        self._queue: asyncio.Queue[AuditEvent | None] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start draining (idempotent); until then ``put`` writes each event itself."""
        if self._task is None:
            self._queue = asyncio.Queue(maxsize=AUDIT_QUEUE_MAX)
            self._task = asyncio.create_task(self._drain(), name="tenancy-audit")

    async def put(self, event: AuditEvent) -> None:
        """Returns once ``event`` is queued; when the queue is full or not running, once it is written."""
        queue = self._queue
        if queue is not None:
            try:
                queue.put_nowait(event)
                return
            except asyncio.QueueFull:
                pass
        await self._write([event])

    async def join(self) -> None:
        """Wait until every queued event is written."""
        if self._queue is not None:
            await self._queue.join()

    async def aclose(self) -> None:
        """Write the queued events and stop the task; later events are written one by one."""
        task, queue = self._task, self._queue
        self._task, self._queue = None, None  # new events now go straight to the writer
        if task is not None and queue is not None:
            await queue.put(None)
            await task

    async def _drain(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            batch: list[AuditEvent | None] = [await queue.get()]
            while len(batch) < AUDIT_BATCH_MAX and not queue.empty():
                batch.append(queue.get_nowait())
            events = [event for event in batch if event is not None]
            try:
                if events:
                    await self._write_patiently(events)
            except asyncio.CancelledError:
                raise
            except (sqlite3.Error, Unavailable):
                log.exception("audit write failed; %d audit events lost", len(events))
            finally:
                for _ in batch:
                    queue.task_done()
            if None in batch:
                return

    async def _write_patiently(self, events: list[AuditEvent]) -> None:
        for attempt in range(1, LOCKED_TRIES + 1):
            try:
                await self._write(events)
                return
            except Unavailable as exc:  # the database is locked: the lock holder is done soon
                if attempt == LOCKED_TRIES:
                    raise
                await asyncio.sleep(exc.retry_after or 1.0)
