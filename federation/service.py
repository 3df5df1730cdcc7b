"""The federated half of one hub, assembled: identity, trust, libp2p, mDNS, adverts, forwarding, serving.

``runtime/hub.py`` builds a ``Federation`` after the pipeline when the hub holds a fleet
certificate (or trusted keys) and ``[p2p] enabled``; it hands the pipeline its forwarder and
closes it before the modules stop.  One task tends the fleet, once per tick:

- adverts: this hub's own capabilities to every peer every ``advert_interval_s``, and at once on
  a change (a module attached, detached or reloaded);
- expiry: a peer's advert older than 3 intervals is dropped with its routes;
- redial: bootstrap peers and lost peers are dialled again with backoff and jitter (py-libp2p
  does not reconnect by itself);
- peer exchange: each advert names the peers its sender is linked to, so a hub that bootstraps
  from one peer dials the rest of the fleet (each still proves itself with its certificate);
- round trips: each peer is pinged once per interval; the table weighs peers by it;
- ``peers.json`` in the state dir: what ``democratic-ai peers`` prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from daemon.core.errors import PermissionDenied, Unavailable, error_from_body
from daemon.core.i18n import t
from daemon.core.pipeline import Pipeline
from daemon.core.ports import UsageGate
from daemon.runtime.config import HubConfig
from daemon.runtime.files import atomic_write
from federation import wire
from federation.adverts import MAX_PEER_ADDRS, MAX_PEER_HINTS, Advert, AdvertError, capabilities_of, next_seq
from federation.fleet import FleetTrust, TrustedPeer
from federation.forwarder import PeerForwarder
from federation.identity import NodeIdentity
from federation.links import Links
from federation.peers import PeerTable
from federation.sealing import Opened, ReplayGuard
from federation.serving import PeerCalls
from federation.sync.outbox import SyncOutbox
from federation.sync.receiver import SyncReceiver
from federation.transport import Libp2pNode

log = logging.getLogger("democratic_ai.federation")

PEERS_FILE = "peers.json"
#: a peer heard of (mDNS, another peer's advert) but not linked is dialled again at most this often
HINT_RETRY_S = 30.0
MAX_HINTED = 256
#: the bridge to trio hands work between two threads on every call; with the default 5 ms switch
#: interval a hand-over can wait out the other thread's time slice.  The bridge alone moves 30 % more
#: round trips at 0.5 ms; whole hubs on this 2-core box showed no difference beyond noise
#: (docs/benchmarks.md, "Federation"), so this is the cheap side of a measured trade.
SWITCH_INTERVAL_S = 0.0005


def federates(config: HubConfig, trust: FleetTrust) -> bool:
    """True when this hub should join a fleet: p2p on and a certificate or trusted keys to check peers by."""
    return config.p2p.enabled and trust.federates


class Federation:
    """One hub's fleet membership; ``start`` after the pipeline, ``close`` before the modules stop."""

    def __init__(self, *, config: HubConfig, identity: NodeIdentity, trust: FleetTrust, pipeline: Pipeline,
                 served: UsageGate, registry: CollectorRegistry, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.identity = identity
        self.trust = trust
        self.pipeline = pipeline
        self.node_id = identity.peer_id
        self.site = config.node.name or socket.gethostname()[:64]
        self.version = _version()
        self.interval = config.p2p.advert_interval_s
        self._clock = clock
        self._rng = random.Random()
        self.addrs: list[str] = []
        self.table = PeerTable(advert_interval_s=self.interval)
        self.transport = Libp2pNode(identity.seed, [config.p2p.listen], on_frame=self._on_frame,
                                    on_link=self._on_link, on_link_lost=self._on_link_lost)
        #: the central node's receiver of usage batches (runtime sets it on a central node), and a site's outbox
        self.receiver: SyncReceiver | None = None
        self.outbox: SyncOutbox | None = None
        self.links = Links(identity=identity, trust=trust, transport=self.transport, handler=_Requests(self),
                           hello=self._hello, on_peer=self._on_peer, on_advert=self._on_advert,
                           on_lost=self._on_lost, on_refused=self._on_refused,
                           max_calls_per_peer=2 * config.federation.max_in_flight_per_peer, clock=clock)
        self.forwarder = PeerForwarder(links=self.links, table=self.table, identity=identity, cert=trust.own,
                                       forward=config.federation.forward, max_hops=config.federation.max_hops,
                                       call_timeout_s=config.federation.call_timeout_s, clock=clock)
        self._refusals = Counter("democratic_ai_peer_refusals", "Peers refused, by reason", ["reason"],
                                 registry=registry)
        self._advertised: tuple[Any, ...] | None = None
        self._advert_seq = next_seq(0, clock())
        self._pinging = False
        self._next_advert = 0.0
        self._next_ping = 0.0
        self._bootstrap_due: dict[str, tuple[float, float]] = {}  # addr -> (next try, backoff)
        self._dialling: set[str] = set()
        self._hinted: dict[str, float] = {}  # node id -> when we last dialled it on a hint
        self._skew: dict[str, float] = {}  # node id -> its clock minus ours, seconds (last advert)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._mdns: Any = None

        self.calls = self._serving(served)

    def _serving(self, served: UsageGate) -> PeerCalls:
        fed = self.config.federation
        # assertions have their own replay window: one call's assertion and its frame are two nonces
        return PeerCalls(pipeline=self.pipeline, usage=served, trust=self.trust, guard=ReplayGuard(),
                         node_id=self.node_id, allow=fed.allow, max_hops=fed.max_hops, clock=self._clock)

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self, state_dir: Path) -> None:
        """Listen, announce on mDNS, dial the bootstrap peers and start tending the fleet."""
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.addrs = await self.transport.start()
        self._state_dir = state_dir
        now = time.monotonic()
        self._bootstrap_due = {addr: (now, 1.0) for addr in self.config.p2p.bootstrap}
        if self.config.mdns.enabled:
            await self._start_mdns()
        self._spawn(self._tend())
        if self.outbox is not None:
            self._spawn(self.outbox.run())
        log.info("federation up", extra={"node_id": self.node_id, "site": self.site, "addrs": self.addrs,
                                         "fleet": self.trust.own.fleet_id if self.trust.own else ""})

    async def close(self) -> None:
        """Stop tending, leave mDNS, end peers' calls, close every connection and the listener."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._mdns is not None:
            with contextlib.suppress(Exception):
                await self._mdns.close()
        await self.links.close()
        await self.transport.close()
        with contextlib.suppress(OSError):
            (self._state_dir / PEERS_FILE).unlink(missing_ok=True)

    async def _start_mdns(self) -> None:
        from federation.discovery.mdns import MdnsDiscovery

        port = _port_of(self.addrs[0]) if self.addrs else 0
        # no interfaces named: those of the p2p listen addresses, loopback and wildcards left out
        self._mdns = MdnsDiscovery(node_id=self.node_id, fleet_id=self.trust.own.fleet_id if self.trust.own else "",
                                   addrs=self.addrs, version=self.version, port=port,
                                   interfaces=list(self.config.mdns.interfaces), on_hint=self._on_hint)
        try:
            await self._mdns.start()
        except Exception as exc:  # no multicast on this network: federation still works through bootstrap peers
            log.warning("mDNS discovery unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
            self._mdns = None

    async def send_batch(self, sealed: bytes) -> int:
        """A site's usage batch to its central node over the fleet link; the seq the centre acknowledged."""
        central = self.config.billing.central
        async for reply in self.links.exchange(central, sealed):
            if reply["t"] == wire.RESULT:
                acked = reply.get("acked")
                if type(acked) is not int:
                    raise Unavailable(t("errors.federation_service.central_node_answered_without"))
                return acked
            if reply["t"] == wire.ERROR:
                raise error_from_body({"error": reply})
        raise Unavailable(t("errors.federation_service.central_node_ended_exchange"))

    # -- what operators see ---------------------------------------------------------------------
    def views(self) -> list[dict[str, Any]]:
        """``democratic-ai peers`` and GET /v1/peers: every known peer with its state and capabilities."""
        views = [view.to_dict() for view in self.table.views(time.monotonic())]
        for view in views:
            # how far the peer's clock is from ours, from its last advert's timestamp (sealed messages
            # beyond 30 s of skew are refused: doctor warns well before that)
            skew = self._skew.get(view["node_id"])
            view["clock_skew_s"] = round(skew, 3) if skew is not None else None
        return views

    # -- tending ------------------------------------------------------------------------------
    async def _tend(self) -> None:
        tick = min(1.0, self.interval / 4)
        while True:
            now = time.monotonic()
            try:
                for node_id in self.table.expire(now):
                    log.info("peer's adverts expired: its routes are gone", extra={"peer": node_id})
                self._advertise(now)
                self._redial(now)
                if now >= self._next_ping:
                    self._next_ping = now + self.interval
                    if not self._pinging:  # a round still waiting on silent peers is not doubled
                        self._spawn(self._ping_all())
                    self._spawn(self._write_peers())
            except Exception:  # one bad tick must not end the fleet's tending for the life of the hub
                log.exception("tending the fleet failed; trying again next tick")
            await asyncio.sleep(tick)

    def _advert(self) -> Advert:
        load, free = self.pipeline.load()
        linked = {peer.peer_id for peer in self.links.peers()}
        peers = tuple((view.node_id, tuple(view.addrs[:MAX_PEER_ADDRS]))
                      for view in self.table.views(time.monotonic())
                      if view.node_id in linked and view.addrs)[:MAX_PEER_HINTS]
        return Advert(node_id=self.node_id, site=self.site, seq=self._advert_seq, version=self.version,
                      load=load, free_slots=free, capabilities=capabilities_of(self.pipeline.own_capabilities()),
                      addrs=tuple(self.addrs), peers=peers)

    def _advertise(self, now: float) -> None:
        # which module serves which action: cheap to compare each tick (schemas are hashed only to send)
        served = tuple((e.action, tuple(m.id for m in e.modules)) for e in self.pipeline.own_capabilities())
        if served == self._advertised and now < self._next_advert:
            return
        self._advertised = served
        self._next_advert = now + self.interval
        self._advert_seq = next_seq(self._advert_seq, self._clock())
        self.links.send_to_all(wire.ADVERT, self._advert().to_body())

    def _redial(self, now: float) -> None:
        linked = {peer.peer_id for peer in self.links.peers()}
        for addr, (due, backoff) in list(self._bootstrap_due.items()):
            if now >= due and _peer_of(addr) not in linked and addr not in self._dialling:
                self._bootstrap_due[addr] = (now + backoff * (1 + self._rng.random() * 0.2), min(30.0, backoff * 2))
                self._spawn(self._dial(addr))
            elif _peer_of(addr) in linked:
                self._bootstrap_due[addr] = (now + 1.0, 1.0)
        for node_id, addrs in self.table.to_redial(now, self._rng):
            if node_id not in linked:
                for addr in addrs[:1]:
                    if addr not in self._dialling:
                        self._spawn(self._dial(addr if "/p2p/" in addr else f"{addr}/p2p/{node_id}"))

    async def _dial(self, addr: str) -> None:
        self._dialling.add(addr)
        try:
            await self.transport.connect(addr)
        except Exception as exc:  # the transport's errors: refused, timed out, unreachable
            log.debug("dial failed", extra={"addr": addr, "error": str(exc)})
        finally:
            self._dialling.discard(addr)

    async def _ping_all(self) -> None:
        self._pinging = True
        try:
            await asyncio.gather(*(self._ping(peer.peer_id) for peer in self.links.peers()))
        finally:
            self._pinging = False

    async def _ping(self, peer_id: str) -> None:
        try:
            rtt = await self.transport.ping(peer_id)
        except Exception:  # a peer that cannot be pinged shows no round trip; its link may be going
            return
        self.table.rtt(peer_id, rtt, time.monotonic())

    async def _write_peers(self) -> None:
        body = json.dumps(self.views()).encode()
        await asyncio.to_thread(atomic_write, self._state_dir / PEERS_FILE, body)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a federation task failed", exc_info=task.exception())

    # -- callbacks ----------------------------------------------------------------------------
    def _on_frame(self, peer_id: str, frame: bytes) -> None:
        self.links.on_frame(peer_id, frame)

    def _on_link(self, peer_id: str) -> None:
        self.links.on_link(peer_id)

    def _on_link_lost(self, peer_id: str) -> None:
        self.links.on_link_lost(peer_id)

    def _hello(self) -> dict[str, Any]:
        own = self.trust.own
        return {"cert": own.to_bytes() if own is not None else None, "site": self.site, "addrs": self.addrs,
                "version": self.version}

    def _on_peer(self, peer: TrustedPeer, hello: dict[str, Any]) -> None:
        addrs = hello.get("addrs")
        addrs = tuple(a for a in addrs[:16] if isinstance(a, str) and len(a) <= 256) if isinstance(addrs, list) else ()
        now = time.monotonic()
        if not self.table.seen(peer.peer_id, peer.site or peer.peer_id[:16], addrs, now):
            log.warning("peer table full: a new peer is turned away", extra={"peer": peer.peer_id})
            self._spawn(self.transport.disconnect(peer.peer_id))
            return
        self.table.connected(peer.peer_id, now)
        log.info("peer joined", extra={"peer": peer.peer_id, "site": peer.site})
        self.links.send_to(peer.peer_id, wire.ADVERT, self._advert().to_body())

    def _on_advert(self, peer: TrustedPeer, opened: Opened) -> None:
        try:
            advert = Advert.from_body(opened.body)
        except AdvertError as exc:
            log.warning("bad advert", extra={"peer": peer.peer_id, "error": str(exc)})
            self._on_refused("bad_advert")
            return
        if advert.node_id != peer.peer_id:
            self._on_refused("advert_for_another_node")
            return
        rtt = next((v.rtt_ms for v in self.table.views(time.monotonic()) if v.node_id == peer.peer_id), None)
        self._skew[peer.peer_id] = opened.sent_at - self._clock() + (rtt or 0.0) / 2000
        if self.table.apply_advert(advert, time.monotonic()):
            for node_id, addrs in advert.peers:  # the fleet beyond our bootstrap peers: worth a dial
                self._dial_hint(node_id, addrs)

    def _on_lost(self, peer_id: str) -> None:
        self.table.lost(peer_id, time.monotonic())
        log.info("peer link lost", extra={"peer": peer_id})

    def _on_refused(self, reason: str) -> None:
        self._refusals.labels(reason).inc()

    def _on_hint(self, hint: Any) -> None:
        """An mDNS record: a peer to dial (it proves itself on the link)."""
        self._dial_hint(hint.node_id, tuple(hint.addrs))

    def _dial_hint(self, node_id: str, addrs: tuple[str, ...]) -> None:
        """Dial a peer we heard of (mDNS, another peer's advert) unless linked, being dialled or tried lately."""
        now = time.monotonic()
        if node_id == self.node_id or not addrs or self.links.peer(node_id) is not None:
            return
        if now - self._hinted.get(node_id, -math.inf) < HINT_RETRY_S:
            return
        if len(self._hinted) >= MAX_HINTED:  # bounded: forget the longest-ago attempt
            del self._hinted[min(self._hinted, key=self._hinted.__getitem__)]
        self._hinted[node_id] = now
        addr = addrs[0]
        addr = addr if "/p2p/" in addr else f"{addr}/p2p/{node_id}"
        if addr not in self._dialling:
            self._spawn(self._dial(addr))


class _Requests:
    """``Links``' handler: forwarded calls go to ``PeerCalls``, usage batches to the central node's receiver."""

    def __init__(self, federation: Federation) -> None:
        self.federation = federation

    async def serve(self, peer: TrustedPeer, call: Opened, sealed: bytes) -> AsyncIterator[dict[str, Any]]:
        """The reply frames for one request of ``peer``."""
        if call.kind != wire.USAGE:
            async for reply in self.federation.calls.serve(peer, call, sealed):
                yield reply
            return
        receiver = self.federation.receiver
        if receiver is None:
            raise PermissionDenied(t("errors.federation_service.hub_not_fleet_central"))
        yield {"t": wire.RESULT, "acked": await receiver.receive(sealed, sender=peer.peer_id)}


def _peer_of(addr: str) -> str:
    return addr.rsplit("/p2p/", 1)[-1]


def _port_of(multiaddr: str) -> int:
    parts = multiaddr.split("/")
    with contextlib.suppress(ValueError, IndexError):
        return int(parts[parts.index("tcp") + 1])
    return 0


def _version() -> str:
    try:
        return metadata.version("democratic-ai")[:32]
    except metadata.PackageNotFoundError:
        return "0"
