"""Module slots: priority order, FIFO within a priority, TTL expiry while queued, cancellation."""

import asyncio

import pytest

from daemon.core.errors import DeadlineExceeded
from daemon.core.scheduler import ModuleScheduler


async def test_waiters_run_by_priority_then_arrival() -> None:
    scheduler = ModuleScheduler(concurrency=1)
    order: list[str] = []
    gate = asyncio.Event()

    async def job(name: str, priority: int) -> None:
        async with scheduler.slot(priority, None):
            if name == "first":
                await gate.wait()
            order.append(name)

    first = asyncio.create_task(job("first", 5))
    await asyncio.sleep(0)
    tasks = [asyncio.create_task(job(n, p)) for n, p in (("low", 1), ("high-1", 9), ("mid", 5), ("high-2", 9))]
    await asyncio.sleep(0)
    assert scheduler.slots.queued == 4
    gate.set()
    await asyncio.gather(first, *tasks)
    assert order == ["first", "high-1", "high-2", "mid", "low"]
    assert scheduler.slots.in_flight == 0


async def test_a_call_whose_deadline_passes_while_queued_never_runs() -> None:
    scheduler = ModuleScheduler(concurrency=1)
    ran: list[str] = []
    release = asyncio.Event()

    async def hold() -> None:
        async with scheduler.slot(5, None):
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    with pytest.raises(DeadlineExceeded):
        async with scheduler.slot(9, loop.time() + 0.05):
            ran.append("expired")
    release.set()
    await holder
    assert ran == []
    assert scheduler.slots.in_flight == 0 and scheduler.slots.queued == 0


async def test_a_cancelled_waiter_gives_its_place_to_the_next() -> None:
    scheduler = ModuleScheduler(concurrency=1)
    release = asyncio.Event()
    ran: list[str] = []

    async def job(name: str, wait: bool = False) -> None:
        async with scheduler.slot(5, None):
            if wait:
                await release.wait()
            ran.append(name)

    holder = asyncio.create_task(job("holder", wait=True))
    await asyncio.sleep(0)
    doomed = asyncio.create_task(job("doomed"))
    survivor = asyncio.create_task(job("survivor"))
    await asyncio.sleep(0)
    doomed.cancel()
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(holder, survivor)
    assert ran == ["holder", "survivor"]
    assert doomed.cancelled()
    assert scheduler.slots.in_flight == 0


async def test_concurrency_is_never_exceeded() -> None:
    scheduler = ModuleScheduler(concurrency=3)
    running = 0
    peak = 0

    async def job() -> None:
        nonlocal running, peak
        async with scheduler.slot(5, None):
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.001)
            running -= 1

    await asyncio.gather(*(job() for _ in range(50)))
    assert peak == 3


async def test_a_full_queue_refuses_the_next_waiter_with_retry_after() -> None:
    from daemon.core.errors import Unavailable
    from daemon.core.scheduler import SlotQueue

    loop = asyncio.get_running_loop()
    slots = SlotQueue(concurrency=1, max_queued=2)
    assert slots.try_acquire()
    slots.enqueue(0, loop.create_future())
    slots.enqueue(9, loop.create_future())
    with pytest.raises(Unavailable) as refused:
        slots.enqueue(5, loop.create_future())
    assert refused.value.retry_after and refused.value.retry_after > 0
    slots.release()  # the priority-9 waiter takes the slot: room for one more
    slots.enqueue(5, loop.create_future())
