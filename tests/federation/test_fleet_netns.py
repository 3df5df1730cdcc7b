"""Two hubs on one LAN, no bootstrap peers: they find each other by mDNS and one forwards to the other.

Each hub is a real ``democratic-ai serve`` in a network namespace of its own, the two joined by a
veth pair (real multicast, not loopback). Its doors listen on the namespace's own loopback; its
libp2p node and mDNS on the namespace's LAN address. The test reads each hub's state dir and
calls it with the CLI run inside its namespace. Skipped, with the reason, where this machine
cannot make network namespaces (not root, no iproute2).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from federation.fleet import FleetKey
from tests.federation.netns import Namespace, lan_fixture
from tests.support.fleet import FleetMember, enrol
from tests.support.hubproc import ROOT, HubProcess

lan = lan_fixture(2)
WAIT_S = 30.0


def on_lan(tmp: Path, name: str, host: Namespace, fleet: FleetKey, modules: tuple[str, ...]) -> FleetMember:
    """A hub of ``fleet`` in namespace ``host``: p2p and mDNS on the LAN address, no bootstrap peers."""
    return enrol(tmp, name, fleet, modules, interval=1, host_ip=host.ip, port=4701, mdns=True,
                 wrapper=["ip", "netns", "exec", host.name])


def peers_of(hub: HubProcess) -> list[dict[str, Any]]:
    path = hub.state_dir / "peers.json"
    try:
        return list(json.loads(path.read_text())) if path.exists() else []
    except ValueError:
        return []  # caught mid-write: the hub writes it atomically, but read again


def test_two_hubs_with_no_bootstrap_find_each_other_by_mdns_and_forward(lan: list[Namespace], tmp_path: Path) -> None:
    fleet = FleetKey.generate("lan")
    origin = on_lan(tmp_path, "origin", lan[0], fleet, ("text.summarize",)).hub
    far = on_lan(tmp_path, "far", lan[1], fleet, ("echo",)).hub
    try:
        far.start()
        origin.start()
        far_id = far.endpoints["node_id"]
        deadline = time.monotonic() + WAIT_S
        while not any(p["node_id"] == far_id and "echo" in p["capabilities"] for p in peers_of(origin)):
            assert time.monotonic() < deadline, f"origin never found far by mDNS:\n{origin.log()[-3000:]}"
            time.sleep(0.2)
        done = subprocess.run(
            lan[0].argv([sys.executable, "-m", "daemon.cli", "call", "echo", "--payload", '{"across": "the lan"}',
                         "--state-dir", str(origin.state_dir), "--key", origin.admin_key]),
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer["result"] == {"across": "the lan"}
        assert answer["served_by"] == far_id
    finally:
        origin.stop()
        far.stop()
