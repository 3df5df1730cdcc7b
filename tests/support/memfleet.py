"""A fleet in memory: hubs whose pipelines, links, peer tables, forwarders and serving sides are the
real ones, joined by an in-memory transport instead of libp2p (aioquic's ``client_and_server`` idea).

The logic that must not depend on timing — trust, forwarding, failover, cancellation, loops,
policy — is tested on this, with no sockets and no threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.core.pipeline import Pipeline
from daemon.hosting.module_host import LocalModule, ModuleHost
from daemon.runtime.config import ModulesConfig
from daemon.runtime.metrics import HubMetrics
from federation import wire
from federation.adverts import Advert, capabilities_of
from federation.fleet import FleetKey, FleetTrust, TrustedPeer
from federation.forwarder import PeerForwarder
from federation.identity import NodeIdentity
from federation.links import Links
from federation.peers import PeerTable
from federation.sealing import Opened, ReplayGuard
from federation.serving import PeerCalls
from modules.sdk import Module
from tests.support.fakes import FakeAuthenticator, FakeUsageGate


class MemoryNetwork:
    """Links between in-memory transports; frames are delivered on the loop, in order, like a stream."""

    def __init__(self) -> None:
        self.nodes: dict[str, MemoryTransport] = {}

    async def connect(self, a: str, b: str) -> None:
        """Open a link between ``a`` and ``b`` (both hear ``on_link``), then let the hellos through."""
        self.nodes[a].peers.add(b)
        self.nodes[b].peers.add(a)
        self.nodes[a].links.on_link(b)
        self.nodes[b].links.on_link(a)
        await settle()

    def cut(self, a: str, b: str) -> None:
        """The link between ``a`` and ``b`` drops (a killed hub, a pulled cable)."""
        for one, other in ((a, b), (b, a)):
            if other in self.nodes[one].peers:
                self.nodes[one].peers.discard(other)
                self.nodes[one].links.on_link_lost(other)


class MemoryTransport:
    """``Links``' transport over a ``MemoryNetwork``."""

    links: Links

    def __init__(self, network: MemoryNetwork, peer_id: str) -> None:
        self.network = network
        self.peer_id = peer_id
        self.peers: set[str] = set()
        self.sent: list[tuple[str, bytes]] = []
        network.nodes[peer_id] = self

    def send(self, peer_id: str, frame: bytes) -> None:
        """Deliver ``frame`` on the next loop turn; ConnectionError when there is no link."""
        if peer_id not in self.peers:
            raise ConnectionError(f"no link to {peer_id}")
        self.sent.append((peer_id, frame))
        other = self.network.nodes[peer_id]
        asyncio.get_running_loop().call_soon(other.links.on_frame, self.peer_id, frame)

    async def disconnect(self, peer_id: str) -> None:
        """Drop the link, both ends."""
        self.network.cut(self.peer_id, peer_id)


@dataclass
class Member:
    """One hub of the in-memory fleet, with the parts a test looks at."""

    name: str
    identity: NodeIdentity
    pipeline: Pipeline
    host: ModuleHost
    gate: FakeUsageGate  # its own callers' calls
    served: FakeUsageGate  # calls served for peers
    table: PeerTable
    links: Links
    forwarder: PeerForwarder
    calls: PeerCalls
    transport: MemoryTransport
    refusals: list[str] = field(default_factory=list)

    @property
    def node_id(self) -> str:
        """This hub's node id."""
        return self.identity.peer_id

    def advertise(self) -> None:
        """Announce this hub's capabilities to every peer (the service's tend loop does it in a real hub)."""
        self.links.send_to_all(wire.ADVERT, self.advert().to_body())

    def advert(self, seq: int | None = None) -> Advert:
        """This hub's advert now."""
        load, free = self.pipeline.load()
        return Advert(node_id=self.node_id, site=self.name, seq=seq if seq is not None else time.monotonic_ns(),
                      version="test", load=load, free_slots=free,
                      capabilities=capabilities_of(self.pipeline.own_capabilities()), addrs=())


async def settle(turns: int = 50) -> None:
    """Let queued frames and the tasks they start run (no wall-clock sleeping)."""
    for _ in range(turns):
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def member(network: MemoryNetwork, tmp: Path, name: str, modules: list[Module], *, fleet: FleetKey,
                 allow: dict[str, list[str]] | None = None, max_hops: int = 3,
                 trusted_keys: frozenset[bytes] = frozenset(), clock: Callable[[], float] = time.time,
                 seed: bytes | None = None) -> AsyncIterator[Member]:
    """A fleet member named ``name`` serving ``modules`` (plus the built-in echo when listed)."""
    identity = NodeIdentity(seed or NodeIdentity.load_or_create(tmp / name).seed)
    cert = fleet.sign_node(identity.public_key, name, now=clock())
    trust = FleetTrust(own=cert, trusted_keys=trusted_keys)
    host = ModuleHost(ModulesConfig(enabled=[], threads=1), tmp / name)
    await host.start()
    for module in modules:
        host.add(LocalModule(module))
    gate, served = FakeUsageGate(), FakeUsageGate()
    pipeline = Pipeline(authenticator=FakeAuthenticator(), usage=gate, host=host, metrics=HubMetrics(),
                        node_id=identity.peer_id)
    table = PeerTable(advert_interval_s=10.0)
    transport = MemoryTransport(network, identity.peer_id)
    refusals: list[str] = []
    holder: dict[str, Any] = {}

    def on_peer(peer: TrustedPeer, hello: dict[str, Any]) -> None:
        table.seen(peer.peer_id, peer.site, (), time.monotonic())
        table.connected(peer.peer_id, time.monotonic())

    bad_adverts: list[str] = []  # raised inside a loop callback, an assertion would only be logged

    def on_advert(peer: TrustedPeer, opened: Opened) -> None:
        advert = Advert.from_body(opened.body)
        if advert.node_id != peer.peer_id:
            bad_adverts.append(f"{peer.peer_id} advertised for {advert.node_id}")
        table.apply_advert(advert, time.monotonic())

    calls = PeerCalls(pipeline=pipeline, usage=served, trust=trust, guard=ReplayGuard(), node_id=identity.peer_id,
                      allow=allow if allow is not None else {"*": ["*"]}, max_hops=max_hops, clock=clock)
    links = Links(identity=identity, trust=trust, transport=transport, handler=calls,
                  hello=lambda: {"cert": cert.to_bytes(), "site": name, "addrs": [], "version": "test"},
                  on_peer=on_peer, on_advert=on_advert, on_lost=lambda p: table.lost(p, time.monotonic()),
                  on_refused=refusals.append, clock=clock)
    transport.links = links
    forwarder = PeerForwarder(links=links, table=table, identity=identity, cert=cert, max_hops=max_hops,
                              call_timeout_s=5.0, clock=clock)
    pipeline.forwarder = forwarder
    holder["member"] = Member(name, identity, pipeline, host, gate, served, table, links, forwarder, calls,
                              transport, refusals)
    try:
        yield holder["member"]
    finally:
        await links.close()
        await host.stop()
    assert not bad_adverts, bad_adverts
