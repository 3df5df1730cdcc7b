"""FrameBatch: the frames of one loop iteration go to the pipe in one write, in order."""

from __future__ import annotations

import asyncio

from daemon.metering.ledger.child import FrameBatch


async def test_frames_added_in_one_iteration_are_written_once_in_order() -> None:
    writes: list[bytes] = []
    batch = FrameBatch(writes.append)
    for frame in (b"a", b"bc", b"d"):
        batch.add(frame)
    assert writes == []  # nothing before the loop turns
    await asyncio.sleep(0)
    assert writes == [b"abcd"]
    batch.add(b"e")
    await asyncio.sleep(0)
    assert writes == [b"abcd", b"e"]


async def test_flush_writes_at_once_and_the_scheduled_flush_then_writes_nothing() -> None:
    writes: list[bytes] = []
    batch = FrameBatch(writes.append)
    batch.add(b"x")
    batch.flush()
    assert writes == [b"x"]
    await asyncio.sleep(0)
    assert writes == [b"x"]
