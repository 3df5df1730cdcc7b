"""Hubs on one LAN find each other by mDNS: real multicast between network namespaces.

Each hub is a small process (tests/federation/mdns_peer.py) running MdnsDiscovery on its own
namespace's address, reporting what it finds as JSON lines. Skipped, with the reason, where this
machine cannot make network namespaces (not root, no iproute2).
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from federation.discovery import MdnsDiscovery, PeerHint
from tests.federation.netns import Namespace, lan_fixture

PEER = Path(__file__).with_name("mdns_peer.py")
PORT = 4701
FLEET = "fleet-ourfleet"
OTHER_FLEET = "fleet-someoneelse"
ALICE = "12D3KooWA1iceA1iceA1iceA1iceA1iceA1iceA1iceA1iceA1ic"
BOB = "12D3KooWBobBobBobBobBobBobBobBobBobBobBobBobBobBobBo"
CAROL = "12D3KooWCaro1Caro1Caro1Caro1Caro1Caro1Caro1Caro1Caro"

lan = lan_fixture(3)


@dataclass
class Peer:
    """One mdns_peer.py process and the JSON events it has printed so far."""

    node_id: str
    host: Namespace
    process: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)

    @property
    def addr(self) -> str:
        return f"/ip4/{self.host.ip}/tcp/{PORT}/p2p/{self.node_id}"

    def wait_for(self, wanted: Callable[[dict[str, Any]], bool], what: str, timeout: float = 10.0) -> dict[str, Any]:
        """The first event (seen or to come) that `wanted` accepts; fails naming `what` after `timeout`."""
        for event in self.events:
            if wanted(event):
                return event
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            event = json.loads(line)
            self.events.append(event)
            if wanted(event):
                return event
        pytest.fail(f"{self.node_id[:12]} never reported {what}; it said: {self.events}")

    def hints(self) -> list[dict[str, Any]]:
        return [event for event in self.events if event["event"] == "hint"]

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def stop(self) -> dict[str, Any]:
        """Close its stdin: it says goodbye on mDNS and prints the hints it still holds."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        held = self.wait_for(lambda e: e["event"] == "hints", "its final hints")
        self.wait_for(lambda e: e["event"] == "closed", "closing")
        assert self.process.wait(timeout=10) == 0
        return held


def start(host: Namespace, node_id: str, fleet_id: str) -> Peer:
    process = host.popen(
        [sys.executable, str(PEER), node_id, fleet_id, host.ip, str(PORT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    peer = Peer(node_id=node_id, host=host, process=process)

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            peer.lines.put(line)
        peer.lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return peer


def hint_from(node_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["event"] == "hint" and event["node_id"] == node_id


def test_two_hubs_of_one_fleet_find_each_other_and_ignore_a_stranger(lan: list[Namespace]) -> None:
    # a hub of another fleet is already on the LAN when ours come up
    carol = start(lan[2], CAROL, OTHER_FLEET)
    carol.wait_for(lambda e: e["event"] == "started", "being announced")
    alice = start(lan[0], ALICE, FLEET)
    bob = start(lan[1], BOB, FLEET)

    seen_by_alice = alice.wait_for(hint_from(BOB), "Bob")
    seen_by_bob = bob.wait_for(hint_from(ALICE), "Alice")
    assert seen_by_alice == {
        "event": "hint",
        "node_id": BOB,
        "fleet_id": FLEET,
        "addrs": [bob.addr],
        "version": "0.0.0-test",
    }
    assert seen_by_bob == {
        "event": "hint",
        "node_id": ALICE,
        "fleet_id": FLEET,
        "addrs": [alice.addr],
        "version": "0.0.0-test",
    }

    # Carol answered, and was set aside as someone else's hub
    alice.wait_for(
        lambda e: e["event"] == "log" and CAROL in e["message"] and "not ours" in e["message"], "ignoring Carol"
    )

    # Bob moves: Alice hears his new address
    moved = f"/ip4/{lan[1].ip}/tcp/{PORT + 1}/p2p/{BOB}"
    bob.send(f"update {moved}")
    bob.wait_for(lambda e: e["event"] == "updated", "re-announcing")
    alice.wait_for(
        lambda e: e["event"] == "hint" and e["node_id"] == BOB and e["addrs"] == [moved], "Bob's new address"
    )

    # Bob leaves: his goodbye reaches Alice, who drops his hint
    held_by_bob = bob.stop()
    alice.wait_for(lambda e: e["event"] == "log" and BOB in e["message"] and "left" in e["message"], "Bob leaving")
    held_by_alice = alice.stop()
    carol.stop()

    assert [hint["node_id"] for hint in held_by_bob["hints"]] == [ALICE]
    assert held_by_alice["hints"] == []
    for peer in (alice, bob, carol):
        assert all(hint["node_id"] not in (peer.node_id, CAROL) for hint in peer.hints())
    assert carol.hints() == []


async def test_a_hub_listening_only_on_loopback_stays_off_mdns() -> None:
    found: list[PeerHint] = []
    discovery = MdnsDiscovery(
        node_id=ALICE,
        fleet_id=FLEET,
        addrs=[f"/ip4/127.0.0.1/tcp/{PORT}/p2p/{ALICE}", f"/ip4/0.0.0.0/tcp/{PORT}/p2p/{ALICE}"],
        version="0.0.0-test",
        port=PORT,
        interfaces=[],
        on_hint=found.append,
    )
    async with discovery:
        assert discovery.interfaces == []  # nothing to announce on, so nothing is bound or sent


def test_a_hub_with_an_unannounceable_address_is_refused_before_any_socket_opens() -> None:
    with pytest.raises(ValueError, match="multiaddr"):
        MdnsDiscovery(
            node_id=ALICE,
            fleet_id=FLEET,
            addrs=["10.77.0.1:4701"],
            version="0.0.0-test",
            port=PORT,
            interfaces=["10.77.0.1"],
            on_hint=lambda hint: None,
        )
