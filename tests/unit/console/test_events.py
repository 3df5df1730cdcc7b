"""The live feed's bus without sockets: who sees which call, bounded queues, the watcher limit."""

from __future__ import annotations

import asyncio
import json

import pytest

from daemon.console.events import MAX_SUBSCRIBERS, PER_PRINCIPAL, QUEUE_SIZE, RESERVED, EventBus, Viewer
from daemon.core.errors import Unavailable

OPERATOR = Viewer("super_admin", "t0", everything=True)
ACME = Viewer("tenant_admin", "acme")
GLOBEX = Viewer("viewer", "globex")


def call(bus: EventBus, tenant_id: str, status: str = "OK") -> None:
    bus.publish_call(action="echo", module="echo", status=status, latency_ms=1.5, tenant_id=tenant_id, door="http")


async def frames(subscription: object) -> list[dict]:
    out = []
    while subscription.pending:  # type: ignore[attr-defined]
        out.append(json.loads(await subscription.next()))  # type: ignore[attr-defined]
    return out


def test_the_bus_is_false_while_nobody_watches() -> None:
    bus = EventBus()
    assert not bus
    subscription = bus.subscribe(ACME)
    assert bus and len(bus) == 1
    bus.unsubscribe(subscription)
    assert not bus


async def test_a_call_reaches_its_own_tenant_and_the_operators_only() -> None:
    bus = EventBus(clock=lambda: 1_790_000_000.0)
    operator, acme, globex = bus.subscribe(OPERATOR), bus.subscribe(ACME), bus.subscribe(GLOBEX)
    call(bus, "acme")
    call(bus, "", status="UNAUTHENTICATED")  # nobody known: the operators' business only
    seen = await frames(acme)
    assert seen == [{"type": "call", "at": "2026-09-21T14:13:20.000+00:00",
                     "data": {"action": "echo", "module": "echo", "status": "OK", "latency_ms": 1.5,
                              "tenant_id": "acme", "door": "http"}}]
    assert await frames(globex) == []
    assert [f["data"]["status"] for f in await frames(operator)] == ["OK", "UNAUTHENTICATED"]


async def test_scoped_frames_are_built_once_per_scope() -> None:
    bus = EventBus()
    subs = [bus.subscribe(v) for v in (OPERATOR, ACME, Viewer("viewer", "acme"), GLOBEX)]
    built: list[object] = []

    def modules_for(viewer: Viewer) -> list[str]:
        built.append(viewer.scope)
        return ["all"] if viewer.everything else [viewer.tenant_id]

    bus.publish_scoped("module_status", modules_for)
    assert len(built) == 3, "the two acme watchers share one frame"
    assert [(await frames(s))[0]["data"] for s in subs] == [["all"], ["acme"], ["acme"], ["globex"]]


async def test_a_reader_that_falls_behind_is_dropped_not_buffered() -> None:
    bus = EventBus()
    slow, fine = bus.subscribe(OPERATOR), bus.subscribe(OPERATOR)
    for _ in range(QUEUE_SIZE):
        call(bus, "acme")
    assert slow.pending == QUEUE_SIZE and not slow.overflowed
    while fine.pending:
        await fine.next()
    call(bus, "acme")  # one more than the slow reader's queue holds
    assert slow.overflowed and slow.pending == 0, "what it did not read is let go"
    assert await slow.next() is None
    await asyncio.wait_for(slow.ended(), 1)
    assert len(bus) == 1 and not fine.overflowed and fine.pending == 1


def test_the_65th_watcher_is_refused() -> None:
    bus = EventBus()
    for _ in range(MAX_SUBSCRIBERS):
        bus.subscribe(OPERATOR)
    with pytest.raises(Unavailable) as refused:
        bus.subscribe(OPERATOR)
    assert refused.value.http_status == 503 and refused.value.details["max_subscribers"] == 64
    assert MAX_SUBSCRIBERS == 64 and QUEUE_SIZE == 256


def test_one_key_holds_four_feeds_and_tenants_leave_the_operators_places_free() -> None:
    bus = EventBus()
    for _ in range(PER_PRINCIPAL):
        bus.subscribe(Viewer("viewer", "acme", who="key:dai_acme1"))
    with pytest.raises(Unavailable) as refused:
        bus.subscribe(Viewer("viewer", "acme", who="key:dai_acme1"))
    assert refused.value.details["per_principal"] == 4
    # many keys of one tenant fill the bus up to the operators' reserved places, not into them
    n = PER_PRINCIPAL
    while n < MAX_SUBSCRIBERS - RESERVED:
        bus.subscribe(Viewer("viewer", "acme", who=f"key:dai_acme_{n}"))
        n += 1
    with pytest.raises(Unavailable):
        bus.subscribe(Viewer("viewer", "globex", who="key:dai_globex"))
    for _ in range(RESERVED):
        bus.subscribe(OPERATOR)
    assert len(bus) == MAX_SUBSCRIBERS


async def test_a_waiting_reader_wakes_for_the_next_frame_and_on_close() -> None:
    bus = EventBus()
    subscription = bus.subscribe(ACME)
    waiting = asyncio.create_task(subscription.next())
    await asyncio.sleep(0)
    bus.publish("node_status", {"ready": True})
    assert json.loads(await asyncio.wait_for(waiting, 1))["data"] == {"ready": True}
    waiting = asyncio.create_task(subscription.next())
    await asyncio.sleep(0)
    bus.unsubscribe(subscription)
    assert await asyncio.wait_for(waiting, 1) is None


def test_frames_only_some_watchers_may_see_go_to_them_only() -> None:
    bus = EventBus()
    operator, acme = bus.subscribe(OPERATOR), bus.subscribe(ACME)
    bus.publish("peer_status", [], only=lambda viewer: viewer.everything)
    assert operator.pending == 1 and acme.pending == 0


def test_a_close_reason_is_cut_to_123_bytes_between_characters() -> None:
    from daemon.doors.ws_events import close_reason

    reason = close_reason("UNAUTHENTICATED: " + "認証" * 60)
    assert len(reason) <= 123 and reason.decode("utf-8").startswith("UNAUTHENTICATED: 認証")
    assert close_reason("slow reader") == b"slow reader"
