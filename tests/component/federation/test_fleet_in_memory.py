"""Forwarding, failover, cancellation, trust and loops across a fleet of real pipelines in memory.

No sockets and no threads: the hubs' links run over an in-memory transport, so what is checked
here (who may call whom, which peer serves, what each ledger records) never depends on timing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daemon.core.envelope import CallRequest, CallResult, Credentials, ProgressPart
from daemon.core.errors import CapabilityNotFound, HubError, PermissionDenied
from federation import wire
from federation.fleet import FleetKey
from federation.identity import NodeIdentity
from federation.sealing import seal
from federation.serving import ASSERTION, payload_digest
from modules.sdk import Call, Module, Progress, capability
from tests.support.fakes import KEY
from tests.support.memfleet import Member, MemoryNetwork, member, settle

CREDS = Credentials(api_key=KEY)


class Weather(Module):
    """A capability only some hubs have; ``hold`` makes a call wait until ``release`` is set."""

    name = "weather"
    concurrency = 4

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()
        self.cancelled = 0
        self.calls: list[dict[str, Any]] = []

    @capability("weather.now", description="The weather in a city.")
    async def now(self, payload: dict[str, Any], call: Call) -> dict[str, Any]:
        """Sunny everywhere, after ``release``."""
        self.calls.append(payload)
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return {"city": payload.get("city"), "sky": "sunny", "tenant": call.tenant_id}

    @capability("weather.week", description="Seven days, one part each.")
    async def week(self, payload: dict[str, Any], call: Call) -> AsyncIterator[Any]:
        """A part per day, then the summary; waits for ``release`` after the first day."""
        for day in range(7):
            yield Progress((day + 1) / 7, f"day {day + 1}")
            if day == 0:
                self.started.set()
                try:
                    await self.release.wait()
                except asyncio.CancelledError:
                    self.cancelled += 1
                    raise
        yield {"days": 7}


@pytest.fixture
def fleet() -> FleetKey:
    return FleetKey.generate("acme-fleet")


async def call(hub: Member, action: str, payload: Any = None) -> CallResult:
    return await hub.pipeline.call(CallRequest(action=action, payload=payload or {}), CREDS)


async def test_a_call_only_a_peer_can_serve_is_forwarded_served_there_and_billed_here(
        tmp_path: Path, fleet: FleetKey) -> None:
    network = MemoryNetwork()
    weather = Weather()
    async with member(network, tmp_path, "origin", [], fleet=fleet) as a, \
            member(network, tmp_path, "far", [weather], fleet=fleet) as b:
        await network.connect(a.node_id, b.node_id)
        b.advertise()
        await settle()
        result = await call(a, "weather.now", {"city": "Oslo"})
        assert result.served_by == b.node_id and result.module == "weather"
        # the serving hub ran it for the origin's tenant, namespaced by the origin node
        assert result.result == {"city": "Oslo", "sky": "sunny", "tenant": f"{a.node_id}/t1"}
        # the origin admitted and billed its own caller; the peer recorded it as served, not billed
        assert a.gate.admitted == ["weather.now"]
        assert [r.module for r in a.gate.recorded] == [f"peer:{b.node_id}/weather"]
        assert [(r.action, r.subject) for r in b.served.recorded] == [("weather.now", f"node:{a.node_id}")]
        assert b.gate.recorded == []
        assert result.receipt is not None and result.receipt.peer is not None
        assert result.receipt.peer.node == b.node_id


async def test_peers_capabilities_show_in_the_origins_list_with_their_peer(tmp_path: Path, fleet: FleetKey) -> None:
    network = MemoryNetwork()
    async with member(network, tmp_path, "origin", [], fleet=fleet) as a, \
            member(network, tmp_path, "far", [Weather()], fleet=fleet) as b:
        await network.connect(a.node_id, b.node_id)
        b.advertise()
        await settle()
        entries = {e.action: e for e in await a.pipeline.capabilities(await a.pipeline.authenticate(CREDS))}
        assert entries["weather.now"].origin == f"peer:{b.node_id}"
        assert entries["weather.week"].streaming


async def test_a_stream_crosses_the_hop_and_cancelling_at_the_origin_cancels_at_the_peer(
        tmp_path: Path, fleet: FleetKey) -> None:
    network = MemoryNetwork()
    weather = Weather()
    async with member(network, tmp_path, "origin", [], fleet=fleet) as a, \
            member(network, tmp_path, "far", [weather], fleet=fleet) as b:
        await network.connect(a.node_id, b.node_id)
        b.advertise()
        await settle()
        parts = [p async for p in a.pipeline.stream(CallRequest(action="weather.week"), CREDS)]
        assert [p.message for p in parts if isinstance(p, ProgressPart)] == [f"day {d}" for d in range(1, 8)]
        assert isinstance(parts[-1], CallResult) and parts[-1].result == {"days": 7}

        weather.release.clear()
        weather.started.clear()
        stream = a.pipeline.stream(CallRequest(action="weather.week"), CREDS)
        first = await anext(stream)
        assert isinstance(first, ProgressPart)
        await weather.started.wait()
        await stream.aclose()  # the caller hangs up
        # at once, with no loop turn in between: the origin's admission is given back
        assert len(a.gate.recorded) == 1 and len(a.gate.released) == 2
        await settle()  # the cancel frame travels to the serving hub
        assert weather.cancelled == 1
        assert len(b.served.recorded) == 1  # only the first, finished stream was recorded


async def test_when_the_serving_peer_drops_mid_call_the_call_fails_over_to_the_next(
        tmp_path: Path, fleet: FleetKey) -> None:
    network = MemoryNetwork()
    held, spare = Weather(), Weather()
    async with member(network, tmp_path, "origin", [], fleet=fleet) as a, \
            member(network, tmp_path, "b", [held], fleet=fleet) as b, \
            member(network, tmp_path, "c", [spare], fleet=fleet) as c:
        for peer in (b, c):
            await network.connect(a.node_id, peer.node_id)
            peer.advertise()
        await settle()
        a.table.rtt(b.node_id, 0.001, 0)  # b is closer: it is tried first
        a.table.rtt(c.node_id, 0.050, 0)
        held.release.clear()
        task = asyncio.ensure_future(call(a, "weather.now", {"city": "Lima"}))
        await held.started.wait()
        network.cut(a.node_id, b.node_id)  # b is killed mid-call
        result = await task
        assert result.served_by == c.node_id
        assert len(a.gate.recorded) == 1  # billed once, for the answer the caller got
        # b is down in the origin's table: the next call goes straight to c
        again = await call(a, "weather.now", {"city": "Quito"})
        assert again.served_by == c.node_id


async def test_a_hub_of_another_fleet_is_refused_and_never_serves_or_is_served(tmp_path: Path, fleet: FleetKey) -> None:
    network = MemoryNetwork()
    stranger_fleet = FleetKey.generate("other")
    async with member(network, tmp_path, "origin", [], fleet=fleet) as a, \
            member(network, tmp_path, "stranger", [Weather()], fleet=stranger_fleet) as s:
        await network.connect(a.node_id, s.node_id)
        s.advertise()
        await settle()
        assert a.links.peers() == [] and s.links.peers() == []
        assert "other_fleet" in a.refusals
        with pytest.raises(CapabilityNotFound):
            await call(a, "weather.now")


async def call_frame(origin: Member, *, body: dict[str, Any], assertion_by: NodeIdentity | None = None,
                     assertion: dict[str, Any] | None = None) -> bytes:
    """A call frame as ``origin`` would seal it, with an assertion signed by ``assertion_by``."""
    full = {"payload": {}, "priority": 5, "ttl": 5.0, "correlation_id": "c", "origin": origin.node_id, "hop": 1,
            "visited": [origin.node_id], "stream": False, **body}
    claims = {"tenant_id": "t1", "tenant_name": "acme", "plan": "starter", "action": body["action"],
              "trace_id": body["trace_id"], "payload": payload_digest(full["payload"]), "cert": None,
              **(assertion or {})}
    full["assertion"] = seal(assertion_by or origin.identity, ASSERTION, claims, origin.links._clock())
    return seal(origin.identity, wire.CALL, full, origin.links._clock())


async def send_call(origin: Member, peer: Member, sealed: bytes) -> dict[str, Any]:
    """Send a hand-made call from ``origin`` to ``peer``; the peer's final reply frame."""
    async for reply in origin.links.exchange(peer.node_id, sealed):
        if reply["t"] != wire.PART:
            return reply
    raise AssertionError("no reply")


@pytest.mark.parametrize(("case", "code"), [
    ("forged on-behalf-of", "PERMISSION_DENIED"),
    ("assertion for another action", "PERMISSION_DENIED"),
    ("payload changed under the assertion", "PERMISSION_DENIED"),
    ("a loop back through the serving hub", "PERMISSION_DENIED"),
    ("too many hops", "PERMISSION_DENIED"),
    ("a malformed call", "VALIDATION_ERROR"),
])
async def test_a_peer_call_that_does_not_hold_is_refused_with_the_contracts_code(
        tmp_path: Path, fleet: FleetKey, case: str, code: str) -> None:
    network = MemoryNetwork()
    weather = Weather()
    async with member(network, tmp_path, "origin", [], fleet=fleet) as a, \
            member(network, tmp_path, "far", [weather], fleet=fleet) as b:
        await network.connect(a.node_id, b.node_id)
        body: dict[str, Any] = {"action": "weather.now", "trace_id": "t" * 32}
        kwargs: dict[str, Any] = {}
        if case == "forged on-behalf-of":
            kwargs["assertion_by"] = NodeIdentity(b"\x01" * 32)  # not the origin's key
        elif case == "assertion for another action":
            kwargs["assertion"] = {"action": "weather.week"}
        elif case == "payload changed under the assertion":
            kwargs["assertion"] = {"payload": payload_digest({"city": "Oslo"})}  # what the origin signed
            body["payload"] = {"city": "Paris"}  # what a relay sent on
        elif case == "a loop back through the serving hub":
            body["visited"] = [a.node_id, b.node_id]
        elif case == "too many hops":
            body["hop"] = 4
        else:
            body["priority"] = "urgent"
        reply = await send_call(a, b, await call_frame(a, body=body, **kwargs))
        assert (reply["t"], reply["code"]) == ("error", code)
        assert weather.calls == [] and b.served.recorded == []


async def test_a_replayed_call_frame_is_refused(tmp_path: Path, fleet: FleetKey) -> None:
    network = MemoryNetwork()
    weather = Weather()
    async with member(network, tmp_path, "origin", [], fleet=fleet) as a, \
            member(network, tmp_path, "far", [weather], fleet=fleet) as b:
        await network.connect(a.node_id, b.node_id)
        sealed = await call_frame(a, body={"action": "weather.now", "trace_id": "r" * 32})
        first = await send_call(a, b, sealed)
        assert first["t"] == "result"
        again = await send_call(a, b, sealed)
        assert (again["t"], again["code"]) == ("error", "PERMISSION_DENIED")
        assert len(weather.calls) == 1


async def test_the_fleet_policy_decides_which_sites_may_use_which_actions(tmp_path: Path, fleet: FleetKey) -> None:
    network = MemoryNetwork()
    async with member(network, tmp_path, "origin", [], fleet=fleet) as a, \
            member(network, tmp_path, "far", [Weather()], fleet=fleet,
                   allow={"origin": ["weather.week"], "*": []}) as b:
        await network.connect(a.node_id, b.node_id)
        b.advertise()
        await settle()
        with pytest.raises(PermissionDenied, match="fleet policy"):
            await call(a, "weather.now")
        assert a.gate.recorded == [] and b.served.recorded == []


async def test_a_call_hops_through_a_middle_hub_and_never_loops_back(tmp_path: Path, fleet: FleetKey) -> None:
    network = MemoryNetwork()
    async with member(network, tmp_path, "a", [], fleet=fleet) as a, \
            member(network, tmp_path, "b", [], fleet=fleet) as b, \
            member(network, tmp_path, "c", [Weather()], fleet=fleet) as c:
        await network.connect(a.node_id, b.node_id)
        await network.connect(b.node_id, c.node_id)
        c.advertise()
        await settle()
        # a does not know c; b does. a learns of weather.now only if b advertised it: it does not
        # re-advertise what it learned (no advert loops), so a cannot reach c through b by itself
        with pytest.raises(CapabilityNotFound):
            await call(a, "weather.now")
        # a call that reaches b (as if b's advert were stale) hops on to c, and the chain is recorded
        result = await call(b, "weather.now", {"city": "Bern"})
        assert result.served_by == c.node_id
        served = c.served.recorded[-1]
        assert served.subject == f"node:{b.node_id}"


async def test_bad_input_for_a_peers_action_is_refused_at_the_origin_before_it_costs_anything(
        tmp_path: Path, fleet: FleetKey) -> None:
    network = MemoryNetwork()
    weather = Weather()
    async with member(network, tmp_path, "origin", [], fleet=fleet) as a, \
            member(network, tmp_path, "far", [weather], fleet=fleet) as b:
        await network.connect(a.node_id, b.node_id)
        b.advertise()
        await settle()
        with pytest.raises(HubError) as caught:
            await call(a, "weather.now", "not an object")  # against the input schema b advertises
        assert caught.value.code == "VALIDATION_ERROR"
        assert a.gate.admitted == [] and weather.calls == []  # no rate-limit token, no trip to the peer


async def test_an_error_at_the_peer_reaches_the_caller_with_its_code_and_is_not_billed(
        tmp_path: Path, fleet: FleetKey) -> None:
    network = MemoryNetwork()
    async with member(network, tmp_path, "origin", [], fleet=fleet) as a, \
            member(network, tmp_path, "far", [Weather()], fleet=fleet, allow={"*": []}) as b:
        await network.connect(a.node_id, b.node_id)
        b.advertise()
        await settle()
        with pytest.raises(HubError) as caught:
            await call(a, "weather.now", {"city": "Rome"})  # the peer's policy refuses it
        assert caught.value.code == "PERMISSION_DENIED"
        assert a.gate.admitted == ["weather.now"] and len(a.gate.released) == 1 and a.gate.recorded == []


async def test_a_replayed_advert_is_refused_and_the_link_that_carried_it_dropped(
        tmp_path: Path, fleet: FleetKey) -> None:
    network = MemoryNetwork()
    async with member(network, tmp_path, "origin", [], fleet=fleet) as a, \
            member(network, tmp_path, "far", [Weather()], fleet=fleet) as b:
        await network.connect(a.node_id, b.node_id)
        b.advertise()
        await settle()
        assert "weather.now" in a.table.actions(time.monotonic())
        advert = next(frame for peer, frame in b.transport.sent
                      if peer == a.node_id and wire.decode(frame)["t"] == wire.ADVERT)
        a.links.on_frame(b.node_id, advert)  # the same signed advert, again
        await settle()
        assert "replay" in a.refusals
        assert a.links.peer(b.node_id) is None


async def test_a_stranger_spends_no_room_in_the_replay_guard_and_no_decoding_beyond_a_hello(
        tmp_path: Path, fleet: FleetKey) -> None:
    network = MemoryNetwork()
    async with member(network, tmp_path, "origin", [], fleet=fleet) as a, \
            member(network, tmp_path, "stranger", [], fleet=FleetKey.generate("other")) as s:
        await network.connect(a.node_id, s.node_id)
        assert len(a.links.guard) == 0 and "other_fleet" in a.refusals  # refused before its nonce was kept
        network.nodes[a.node_id].peers.add(s.node_id)  # a second link, and this time a huge first frame
        a.links.on_link(s.node_id)
        a.links.on_frame(s.node_id, wire.encode({"t": wire.HELLO, "sealed": b"x" * (64 << 10)}))
        await settle()
        assert "too_large" in a.refusals
