"""Hubs of one fleet as real processes: each with its own node key and a certificate of the fleet.

``enrol`` writes a member's state dir (node key, certificate, ``hub.toml``) without starting it;
``member.hub`` is its ``HubProcess``. Used by the federation and usage-sync tests and benchmarks.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from federation.fleet import FleetKey, install_certificate
from federation.identity import NodeIdentity
from tests.support.hubproc import HubProcess, write_config

#: members announce their capabilities this often by default: a dead one's routes vanish after 1.5 s
ADVERT_INTERVAL_S = 0.5


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class FleetMember:
    """One hub of the fleet: its name, node key, libp2p address and process."""

    name: str
    identity: NodeIdentity
    host_ip: str
    port: int
    hub: HubProcess

    @property
    def node_id(self) -> str:
        """Its node id (libp2p peer id)."""
        return self.identity.peer_id

    @property
    def addr(self) -> str:
        """Its libp2p multiaddr, for others' ``bootstrap``."""
        return f"/ip4/{self.host_ip}/tcp/{self.port}/p2p/{self.node_id}"

    @property
    def ledger(self) -> Path:
        """Its usage ledger file."""
        return self.hub.state_dir / "ledger.db"


def enrol(tmp: Path, name: str, fleet: FleetKey | None, modules: tuple[str, ...], *,
          bootstrap: Sequence[str] = (), role: str = "site", interval: float = ADVERT_INTERVAL_S,
          host_ip: str = "127.0.0.1", port: int | None = None, mdns: bool = False, extra: str = "",
          wrapper: Sequence[str] = ()) -> FleetMember:
    """A hub named ``name`` in ``tmp/name``, certified by ``fleet`` as ``role`` (alone when None), not started.

    ``extra``: more TOML appended to the config (plans, ``[billing]``...); ``wrapper``: what the hub runs
    under (a network namespace, a sandbox).
    """
    state = tmp / name
    identity = NodeIdentity.load_or_create(state)
    port = port if port is not None else free_port()
    config_extra = f'[node]\nname = "{name}"\n'
    if fleet is not None:
        cert = fleet.sign_node(identity.public_key, name, role=role, now=time.time())
        install_certificate(state, cert.to_text(), identity)
        config_extra += (f'[p2p]\nlisten = "/ip4/{host_ip}/tcp/{port}"\nadvert_interval_s = {interval}\n'
                         f"bootstrap = {json.dumps(list(bootstrap))}\n")
    config = write_config(state / "hub.toml", extra=config_extra + extra, modules=modules)
    if mdns:  # write_config turns mDNS off for loopback tests; between network namespaces it is the point
        config.write_text(config.read_text().replace("[mdns]\nenabled = false", "[mdns]\nenabled = true"))
    return FleetMember(name, identity, host_ip, port, HubProcess(state, config, wrapper=list(wrapper)))
