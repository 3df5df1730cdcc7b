"""Per-module admission: a concurrency limit and a priority queue.

``SlotQueue`` is the sans-IO core: higher priority first, FIFO within a priority,
and it never grants a slot to a waiter that has given up.  ``ModuleScheduler`` is the
thin asyncio layer: a waiter holds a future; when its deadline (TTL or the caller's
own) passes while queued it is answered DEADLINE_EXCEEDED and its work never runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from dataclasses import dataclass, field

from daemon.core.errors import DeadlineExceeded, Unavailable
from daemon.core.i18n import t

#: what a refused caller is told to wait before retrying a full queue, in seconds
QUEUE_FULL_RETRY_AFTER_S = 1.0


@dataclass(order=True, slots=True)
class Ticket:
    """A queued waiter; ``sort_key`` is (-priority, arrival) so the heap pops the highest priority, FIFO."""

    sort_key: tuple[int, int]
    waiter: asyncio.Future[None] = field(compare=False)


class SlotQueue:
    """Concurrency slots with a bounded priority queue of waiters (no I/O, no clock)."""

    def __init__(self, concurrency: int, max_queued: int = 256) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if max_queued < 0:
            raise ValueError("max_queued must be >= 0")
        self.concurrency = concurrency
        self.max_queued = max_queued
        self.in_flight = 0
        self._heap: list[Ticket] = []
        self._seq = itertools.count()

    @property
    def queued(self) -> int:
        """Waiters still waiting (those that gave up are not counted); O(n) in the queue."""
        return sum(1 for t in self._heap if not t.waiter.done())

    @property
    def load(self) -> int:
        """Slots in use plus queued tickets: the router's measure for choosing the least loaded module."""
        return self.in_flight + len(self._heap)

    def try_acquire(self) -> bool:
        """Take a slot at once if one is free and nobody is queued (no overtaking); False otherwise."""
        if self.in_flight < self.concurrency and not self._heap:
            self.in_flight += 1
            return True
        return False

    def enqueue(self, priority: int, waiter: asyncio.Future[None]) -> Ticket:
        """Queue ``waiter``; ``release`` resolves it when it is granted the slot.

        UNAVAILABLE (with a retry-after) when ``max_queued`` waiters are queued already: a slow
        module makes callers retry, never makes the hub hold an unbounded queue.
        """
        if len(self._heap) >= self.max_queued:
            raise Unavailable(t("errors.scheduler.module_queue_full_retry"),
                              {"queued": len(self._heap)}, retry_after=QUEUE_FULL_RETRY_AFTER_S)
        ticket = Ticket((-priority, next(self._seq)), waiter)
        heapq.heappush(self._heap, ticket)
        return ticket

    def release(self) -> None:
        """Free a slot, handing it straight to the best waiter still waiting."""
        while self._heap:
            ticket = heapq.heappop(self._heap)
            if not ticket.waiter.done():
                ticket.waiter.set_result(None)  # the slot moves to this waiter
                return
        self.in_flight -= 1

    def discard(self, ticket: Ticket) -> None:
        """Drop a ticket whose waiter gave up; a no-op when it was already popped."""
        with contextlib.suppress(ValueError):
            self._heap.remove(ticket)
            heapq.heapify(self._heap)


class ModuleScheduler:
    """asyncio admission to one module's slots."""

    def __init__(self, concurrency: int, max_queued: int = 256) -> None:
        self.slots = SlotQueue(concurrency, max_queued)

    def slot(self, priority: int, deadline: float | None) -> _Slot:
        """``async with scheduler.slot(priority, deadline):`` runs the body holding one slot."""
        return _Slot(self, priority, deadline)

    async def acquire(self, priority: int, deadline: float | None) -> None:
        """Wait for a slot (``slots.release()`` gives it back): ``slot`` without the context manager, for
        the pipeline's unary path, which first tries ``slots.try_acquire()`` and awaits only when it fails."""
        await self._acquire(priority, deadline)

    async def _acquire(self, priority: int, deadline: float | None) -> None:
        if self.slots.try_acquire():
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        ticket = self.slots.enqueue(priority, waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except BaseException as exc:
            self.slots.discard(ticket)
            if waiter.done() and not waiter.cancelled():
                # granted in the same instant we gave up: pass the slot on
                self.slots.release()
            waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise DeadlineExceeded(t("errors.scheduler.call_deadline_passed_while")) from None
            raise


class _Slot:
    """The async context manager of one slot (a class: cheaper than a generator-based one)."""

    __slots__ = ("deadline", "priority", "scheduler")

    def __init__(self, scheduler: ModuleScheduler, priority: int, deadline: float | None) -> None:
        self.scheduler, self.priority, self.deadline = scheduler, priority, deadline

    async def __aenter__(self) -> None:
        await self.scheduler._acquire(self.priority, self.deadline)

    async def __aexit__(self, *exc_info: object) -> None:
        self.scheduler.slots.release()
