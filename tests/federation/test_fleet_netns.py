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

from federation.identity import FleetKey, NodeIdentity, install_certificate
from tests.federation.netns import Namespace, lan_fixture
from tests.support.hubproc import ROOT, HubProcess, write_config

lan = lan_fixture(2)
WAIT_S = 30.0


def enrol(tmp: Path, name: str, host: Namespace, fleet: FleetKey, modules: tuple[str, ...]) -> HubProcess:
    """A hub of ``fleet`` in namespace ``host``: p2p and mDNS on the LAN address, no bootstrap peers."""
    state = tmp / name
    identity = NodeIdentity.load_or_create(state)
    install_certificate(state, fleet.sign_node(identity.public_key, name, now=time.time()).to_text(), identity)
    config = write_config(state / "hub.toml", modules=modules, extra=(
        f'[node]\nname = "{name}"\n'
        f'[p2p]\nlisten = "/ip4/{host.ip}/tcp/4701"\nadvert_interval_s = 1\n'))
    # write_config turns mDNS off for loopback tests; on this LAN it is the point
    config.write_text(config.read_text().replace("[mdns]\nenabled = false", "[mdns]\nenabled = true"))
    return HubProcess(state, config, wrapper=["ip", "netns", "exec", host.name])


def peers_of(hub: HubProcess) -> list[dict[str, Any]]:
    path = hub.state_dir / "peers.json"
    try:
        return list(json.loads(path.read_text())) if path.exists() else []
    except ValueError:
        return []  # caught mid-write: the hub writes it atomically, but read again


def test_two_hubs_with_no_bootstrap_find_each_other_by_mdns_and_forward(lan: list[Namespace], tmp_path: Path) -> None:
    fleet = FleetKey.generate("lan")
    origin = enrol(tmp_path, "origin", lan[0], fleet, ("text.summarize",))
    far = enrol(tmp_path, "far", lan[1], fleet, ("echo",))
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
