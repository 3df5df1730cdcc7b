"""The writer process's pipe: FrameBatch (the frames of one loop iteration in one write, in order),
and event frames read back as the entries the in-process writer would store."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import msgpack
import pytest

from daemon.metering.ledger.chain import prepare
from daemon.metering.ledger.child import FrameBatch, pack_event, prepare_frame
from daemon.metering.ledger.events import UsageEvent, open_account_event, top_up_event


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


def _events() -> list[UsageEvent]:
    return [
        UsageEvent(tenant_id="t1", subject="key:abc", action="echo", module="echo", plan="starter"),
        UsageEvent(tenant_id="t1", subject="key:abc", action="echo", module="echo", plan="starter", compute_ms=12.5,
                   bytes_in=10, bytes_out=20, units={"b": 2.0, "audio_s": 1.5}, credits=Decimal("-0.05"),
                   ts=1_700_000_000.25, trace_id="trace-1"),
        top_up_event("t2", "10.5", "admin:ops", 1_700_000_001.0),
        open_account_event("t3", "admin:ops", 0.0),
        UsageEvent(tenant_id="ü", subject="key:日本", action="a", kind="served", compute_ms=1e16, ts=1e-7),
        UsageEvent(tenant_id="t1", subject="key:abc", action="echo", credits=Decimal("-0.000")),
    ]


def test_the_writer_process_stores_what_the_in_process_writer_would() -> None:
    # the child prepares entries from frames, never from a UsageEvent: both must hash the same
    packer = msgpack.Packer().pack  # the hub's own packer writes what packb writes
    for event in _events():
        assert pack_event(7, event, pack=packer) == pack_event(7, event)
        frame = msgpack.unpackb(pack_event(7, event), raw=False, strict_map_key=False)
        assert prepare_frame(frame) == prepare(event)
        replay = msgpack.unpackb(pack_event(7, event, replay=True), raw=False, strict_map_key=False)
        assert replay[0] == "replay" and prepare_frame(replay[1:]) == prepare(event)


@pytest.mark.parametrize("damage", [
    {7: "many"},  # api_calls
    {8: [1]},  # compute_ms
    {11: ["not", "a", "map"]},  # units
    {12: "yesterday"},  # ts
    {15: "NaN"},  # credits
    {15: "lots"},
])
def test_a_frame_that_is_not_an_event_is_refused(damage: dict[int, object]) -> None:
    frame = msgpack.unpackb(pack_event(7, _events()[1]), raw=False, strict_map_key=False)
    for index, value in damage.items():
        frame[index] = value
    with pytest.raises((TypeError, ValueError, ArithmeticError)):
        prepare_frame(frame)
    with pytest.raises(ValueError):
        prepare_frame(frame[:-1])
