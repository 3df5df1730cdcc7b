"""A fleet of real hubs on loopback: they find each other through bootstrap peers, trust only their
fleet, forward what they cannot serve through every door, fail over when a peer is killed, forget
its routes within three advert intervals and dial it again when it comes back.

Three hubs of one fleet: ``origin`` serves text.summarize only; ``left`` and ``right`` serve echo.
Each is a ``democratic-ai serve`` process with its own state dir, node key and certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from federation.fleet import FleetKey
from tests.support import doorclients
from tests.support.fleet import FleetMember, enrol
from tests.support.hubproc import ROOT

WAIT_S = 20.0


Member = FleetMember


def door_hub(member: Member) -> doorclients.Hub:
    """The member as the door clients address it."""
    return doorclients.Hub(member.hub.endpoints, member.hub.state_dir)


async def until(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def get(member: Member, path: str) -> Any:
    async with aiohttp.ClientSession() as session, \
            session.get(f"{member.hub.url}{path}", headers={"X-API-Key": member.hub.admin_key}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def post_call(member: Member, action: str, payload: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.post(
            f"{member.hub.url}/v1/call", json={"action": action, "payload": payload},
            headers={"X-API-Key": member.hub.admin_key}) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return dict(body)


async def peer_view(member: Member, node_id: str) -> dict[str, Any] | None:
    peers = (await get(member, "/v1/peers"))["peers"]
    return next((p for p in peers if p["node_id"] == node_id), None)


async def serves_echo(member: Member) -> list[str]:
    entries = {c["action"]: c for c in (await get(member, "/v1/capabilities"))["capabilities"]}
    echo = entries.get("echo")
    return [m["id"] for m in echo["modules"]] if echo and echo["origin"].startswith("peer:") else []


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fleet")


@pytest.fixture(scope="module")
def fleet() -> FleetKey:
    return FleetKey.generate("loopback")


@pytest.fixture(scope="module")
def members(fleet_dir: Path, fleet: FleetKey) -> Iterator[dict[str, Member]]:
    left = enrol(fleet_dir, "left", fleet, ("echo",))
    right = enrol(fleet_dir, "right", fleet, ("echo",))
    origin = enrol(fleet_dir, "origin", fleet, ("text.summarize",), bootstrap=[left.addr, right.addr])
    started: list[Member] = []
    try:
        for member in (left, right, origin):
            member.hub.start()
            started.append(member)
        yield {"origin": origin, "left": left, "right": right}
    finally:
        for member in started:
            member.hub.stop()


async def test_hubs_of_one_fleet_find_each_other_and_list_what_the_others_serve(members: dict[str, Member]) -> None:
    origin, left, right = members["origin"], members["left"], members["right"]
    assert origin.hub.endpoints["node_id"] == origin.node_id
    serving = await until(lambda: _both(serves_echo(origin), {left.node_id, right.node_id}), "echo from both peers")
    assert set(serving) == {left.node_id, right.node_id}
    view = await until(lambda: peer_view(origin, left.node_id), "left in /v1/peers")
    assert view["state"] == "up" and view["site"] == "left" and "echo" in view["capabilities"]
    assert abs(view["clock_skew_s"]) < 5  # one machine: the clocks agree, within the hop's time
    # the CLI prints what the running hub knows, from its state dir
    out = await until(lambda: _peers_cli(origin), "the peers CLI to list both")
    assert {p["node_id"] for p in out} >= {left.node_id, right.node_id}


async def _both(serving: Any, wanted: set[str]) -> list[str] | None:
    found = await serving
    return found if set(found) == wanted else None


def _peers_cli(member: Member) -> list[dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "peers", "--json", "--state-dir",
                           str(member.hub.state_dir)], cwd=ROOT, capture_output=True, text=True, check=True)
    peers: list[dict[str, Any]] = json.loads(done.stdout)["peers"]
    return peers if len(peers) >= 2 else []


@pytest.mark.parametrize("door", ["http", "ws", "h3", "grpc", "mcp-discover"])
async def test_a_call_only_peers_serve_is_forwarded_whichever_door_it_came_in_by(
        members: dict[str, Member], door: str) -> None:
    origin = members["origin"]
    await until(lambda: serves_echo(origin), "echo from a peer")
    outcome = await doorclients.call(door, door_hub(origin), "echo", {"hello": door}, key=origin.hub.admin_key)
    assert outcome.code is None, outcome
    assert outcome.result == {"hello": door}


async def test_the_reply_names_the_peer_and_carries_its_receipt_inside_the_origins(
        members: dict[str, Member]) -> None:
    origin = members["origin"]
    await until(lambda: serves_echo(origin), "echo from a peer")
    body = await post_call(origin, "echo", {"n": 1})
    assert body["served_by"] in {members["left"].node_id, members["right"].node_id}
    assert body["receipt"]["peer"]["node"] == body["served_by"] and body["receipt"]["seq"] >= 1


async def test_a_stream_crosses_the_hop_part_by_part(members: dict[str, Member]) -> None:
    origin = members["origin"]
    await until(lambda: serves_echo(origin), "echo from a peer")
    outcome = await doorclients.call("http", door_hub(origin), "echo.stream", {"steps": 3}, key=origin.hub.admin_key,
                                     stream=True)
    assert outcome.code is None and outcome.progress == [0.25, 0.5, 0.75]


async def test_a_hub_that_bootstraps_from_one_peer_finds_the_rest_of_the_fleet_through_it(
        members: dict[str, Member], fleet_dir: Path, fleet: FleetKey) -> None:
    left, right = members["left"], members["right"]
    newcomer = enrol(fleet_dir, "newcomer", fleet, ("text.summarize",), bootstrap=[left.addr])
    newcomer.hub.start()
    try:
        # right is named nowhere in its config: left's adverts carry the peers left is linked to
        serving = await until(lambda: _both(serves_echo(newcomer), {left.node_id, right.node_id}),
                              "the newcomer to reach right through left")
        assert set(serving) == {left.node_id, right.node_id}
    finally:
        newcomer.hub.stop()


async def test_a_hub_of_another_fleet_is_refused(members: dict[str, Member], fleet_dir: Path) -> None:
    origin = members["origin"]
    stranger = enrol(fleet_dir, "stranger", FleetKey.generate("elsewhere"), ("echo",), bootstrap=[origin.addr])
    stranger.hub.start()
    try:
        await until(lambda: doorclients.metric(door_hub(origin), "democratic_ai_peer_refusals", reason="other_fleet"),
                    "the stranger's refusal to be counted")
        assert await peer_view(origin, stranger.node_id) is None
        assert stranger.node_id not in await serves_echo(origin)
    finally:
        stranger.hub.stop()


async def test_a_killed_peer_fails_over_its_routes_vanish_and_it_is_dialled_again_on_return(
        members: dict[str, Member]) -> None:
    origin, left, right = members["origin"], members["left"], members["right"]
    await until(lambda: _both(serves_echo(origin), {left.node_id, right.node_id}), "echo from both peers")
    # a slow call (a streaming capability drained at the peer: twenty parts 250 ms apart)
    slow = asyncio.ensure_future(post_call(origin, "echo.stream", {"steps": 20, "delay_ms": 250}))
    busy = await until(lambda: _serving_now(left, right), "a peer to take the slow call")
    survivor = right if busy is left else left
    busy.hub.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    busy.hub.process.wait()  # type: ignore[union-attr]
    body = await slow
    assert body["served_by"] == survivor.node_id  # failed over to the other peer within its TTL

    await until(lambda: _both(serves_echo(origin), {survivor.node_id}), "the dead peer's route to vanish")
    view = await peer_view(origin, busy.node_id)
    assert view is None or view["state"] == "down"

    busy.hub.start()  # same state dir: same node key, same port
    await until(lambda: _both(serves_echo(origin), {left.node_id, right.node_id}), "the peer to be dialled again")
    again = await peer_view(origin, busy.node_id)
    assert again is not None and again["state"] == "up"


async def _serving_now(*members: Member) -> Member | None:
    for member in members:
        with contextlib.suppress(aiohttp.ClientError):
            if await doorclients.metric(door_hub(member), "democratic_ai_in_flight", module="echo") >= 1:
                return member
    return None
