"""The pipeline end to end in memory: real ModuleHost and scheduler, fake authenticator and usage gate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon.core.envelope import CallRequest, CallResult, Credentials, ProgressPart
from daemon.core.errors import CapabilityNotFound, DeadlineExceeded, Unauthenticated
from tests.support.fakes import KEY, InProcessHub, Recorded, in_process_hub, wait_until

CREDS = Credentials(api_key=KEY)


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[InProcessHub]:
    async with in_process_hub(tmp_path) as parts:
        yield parts


async def test_a_unary_call_answers_with_a_receipt_and_one_usage_record(hub: InProcessHub) -> None:
    result = await hub.pipeline.call(CallRequest(action="echo", payload={"x": 1}), CREDS)
    assert (result.module, result.result, result.result_json) == ("echo", {"x": 1}, b'{"x":1}')
    assert result.receipt is not None and result.receipt.seq == 1
    assert result.headers == {"RateLimit-Remaining": "99"}
    assert hub.gate.recorded == [Recorded("echo", "echo", "key:test", len(b'{"x":1}'))]
    assert hub.pipeline.in_flight == 0


async def test_an_action_nobody_serves_goes_to_the_forwarder_and_costs_nothing(hub: InProcessHub) -> None:
    with pytest.raises(CapabilityNotFound):
        await hub.pipeline.call(CallRequest(action="no.such"), CREDS)
    assert hub.forwarder.asked == ["no.such"]
    assert hub.gate.admitted == [] and hub.gate.recorded == []


@pytest.mark.parametrize("credentials", [Credentials(api_key="dai_wrong"), Credentials()])
async def test_a_bad_or_missing_key_is_unauthenticated(hub: InProcessHub, credentials: Credentials) -> None:
    with pytest.raises(Unauthenticated):
        await hub.pipeline.call(CallRequest(action="echo", payload={}), credentials)
    assert hub.gate.admitted == [] and hub.gate.recorded == []


async def test_a_streaming_call_yields_progress_parts_then_the_result(hub: InProcessHub) -> None:
    parts = [p async for p in hub.pipeline.stream(CallRequest(action="echo.stream", payload={"steps": 2}), CREDS)]
    assert [type(p) for p in parts] == [ProgressPart, ProgressPart, CallResult]
    progress = [p.progress for p in parts if isinstance(p, ProgressPart)]
    assert progress == sorted(progress) and all(0 < p < 1 for p in progress)
    final = parts[-1]
    assert isinstance(final, CallResult) and final.result == {"steps": 2}
    assert [r.action for r in hub.gate.recorded] == ["echo.stream"]


async def test_a_queued_high_priority_call_runs_before_an_earlier_low_priority_one(hub: InProcessHub) -> None:
    scheduler = hub.host.scheduler("order")

    def run(name: str, priority: int, *, hold: bool = False) -> asyncio.Task[CallResult]:
        request = CallRequest(action="order.run", payload={"name": name, "hold": hold}, priority=priority)
        return asyncio.create_task(hub.pipeline.call(request, CREDS))

    busy = run("busy", 5, hold=True)
    await hub.order.holding.wait()  # the module's one slot is taken
    low = run("low", 0)
    await wait_until(lambda: scheduler.slots.queued == 1)
    high = run("high", 9)
    await wait_until(lambda: scheduler.slots.queued == 2)
    hub.order.release.set()
    await asyncio.gather(busy, low, high)
    assert hub.order.ran == ["busy", "high", "low"]
    assert len(hub.gate.recorded) == 3


async def test_a_call_whose_deadline_passes_while_queued_never_runs(hub: InProcessHub) -> None:
    busy = asyncio.create_task(hub.pipeline.call(
        CallRequest(action="order.run", payload={"name": "busy", "hold": True}), CREDS))
    await hub.order.holding.wait()
    with pytest.raises(DeadlineExceeded):
        await hub.pipeline.call(CallRequest(action="order.run", payload={"name": "late"}, ttl=0.02), CREDS)
    hub.order.release.set()
    await busy
    assert hub.order.ran == ["busy"]
    assert [r.action for r in hub.gate.recorded] == ["order.run"]  # the expired call was never recorded
    assert len(hub.gate.released) == 2  # ...and its admission was handed back


async def test_an_action_only_a_peer_serves_is_admitted_here_forwarded_and_recorded_as_served_by_it(
        hub: InProcessHub) -> None:
    hub.forwarder.peer_results["peer.only"] = {"answer": 42}
    result = await hub.pipeline.call(CallRequest(action="peer.only", payload={"q": 1}), CREDS)
    assert result.result == {"answer": 42} and result.served_by == hub.forwarder.PEER
    # admitted against the caller's own limits, recorded in this hub's ledger as served by the peer
    assert hub.gate.admitted == ["peer.only"]
    assert hub.gate.recorded == [Recorded("peer.only", f"peer:{hub.forwarder.PEER}/peer-echo", "key:test",
                                          len(b'{"answer": 42}'))]
    assert result.receipt is not None and result.receipt.peer is not None
    assert result.receipt.to_dict()["peer"] == {"node": hub.forwarder.PEER, "seq": 7, "hash": "ab" * 32}
    assert result.to_dict()["served_by"] == hub.forwarder.PEER
    # the envelope that went out keeps the caller's tenant, trace and this hub as the origin
    (sent,) = hub.forwarder.forwarded
    assert sent.principal.subject == "key:test" and sent.trace_id


async def test_a_streaming_call_a_peer_serves_streams_its_progress_then_its_answer(hub: InProcessHub) -> None:
    hub.forwarder.peer_results["peer.stream"] = "done"
    parts = [part async for part in hub.pipeline.stream(CallRequest(action="peer.stream"), CREDS)]
    assert [type(p).__name__ for p in parts] == ["ProgressPart", "CallResult"]
    assert parts[-1].served_by == hub.forwarder.PEER  # type: ignore[union-attr]
    assert hub.gate.admitted == ["peer.stream"] and len(hub.gate.recorded) == 1


async def test_capabilities_list_what_only_peers_serve_with_their_origin(hub: InProcessHub) -> None:
    hub.forwarder.peer_results["peer.only"] = {}
    hub.forwarder.peer_results["echo"] = {}  # served here too: this hub's own entry wins
    entries = {e.action: e for e in await hub.pipeline.capabilities(await hub.pipeline.authenticate(CREDS))}
    assert entries["peer.only"].origin == f"peer:{hub.forwarder.PEER}"
    assert entries["echo"].origin == "local"
