"""Real libp2p nodes on 127.0.0.1 in one process: links, frames, ping, loss and redial, ports, security."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.crypto.ed25519 import create_new_key_pair as random_key_pair
from libp2p.network.exceptions import SwarmDialAllFailedError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from multiaddr import Multiaddr
from nacl.signing import SigningKey

from federation.identity import peer_id_from_public_key
from federation.transport import LINK_PROTOCOL, Libp2pNode, TransportError
from federation.transport.errors import unwrap
from federation.transport.framing import FrameDecoder, FrameTooLarge, encode

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
WAIT_S = 10.0  # a guard against hanging, not a timing assertion


@dataclass
class Events:
    """What one node's callbacks reported, in order; the test waits on it."""

    frames: list[tuple[str, bytes]] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    echo: Callable[[str, bytes], None] | None = None

    def on_frame(self, peer_id: str, frame: bytes) -> None:
        self.frames.append((peer_id, frame))
        if self.echo is not None:
            self.echo(peer_id, frame)
        self.changed.set()

    def on_link(self, peer_id: str) -> None:
        self.linked.append(peer_id)
        self.changed.set()

    def on_link_lost(self, peer_id: str) -> None:
        self.lost.append(peer_id)
        self.changed.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


@dataclass
class Site:
    node: Libp2pNode
    events: Events
    addrs: list[str]
    seed: bytes


class Fleet:
    """Starts nodes and closes whichever are still open at the end of the test."""

    def __init__(self) -> None:
        self.nodes: list[Libp2pNode] = []

    async def site(self, *, seed: bytes | None = None, listen: str = LOOPBACK, max_frame: int = 1 << 20) -> Site:
        seed = seed or os.urandom(32)
        events = Events()
        node = Libp2pNode(seed, [listen], on_frame=events.on_frame, on_link=events.on_link,
                          on_link_lost=events.on_link_lost, max_frame=max_frame)
        self.nodes.append(node)
        return Site(node, events, await node.start(), seed)

    async def close(self) -> None:
        for node in self.nodes:
            await node.close()


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    f = Fleet()
    try:
        yield f
    finally:
        await f.close()


def port_of(addr: str) -> int:
    return int(Multiaddr(addr).value_for_protocol("tcp"))


# -- framing (sans-IO) ---------------------------------------------------------------------------
def test_frames_reassemble_from_any_split_and_an_oversized_header_is_refused() -> None:
    wire = encode([b"", b"hello", b"x" * 300])
    decoder = FrameDecoder(max_frame=1000)
    got = [frame for i in range(len(wire)) for frame in decoder.feed(wire[i : i + 1])]
    assert got == [b"", b"hello", b"x" * 300]
    assert decoder.pending == 0
    with pytest.raises(FrameTooLarge):
        FrameDecoder(max_frame=10).feed(encode([b"y" * 11]))


# -- two nodes -----------------------------------------------------------------------------------
async def test_two_nodes_link_and_carry_frames_both_ways_over_one_stream(fleet: Fleet) -> None:
    a = await fleet.site()
    b = await fleet.site()
    b.events.echo = lambda peer, frame: b.node.send(peer, b"re:" + frame)

    assert await a.node.connect(b.addrs[0]) == b.node.peer_id
    await b.events.until(lambda: b.events.linked == [a.node.peer_id])
    assert a.events.linked == [b.node.peer_id]
    assert a.node.links() == [b.node.peer_id] and b.node.links() == [a.node.peer_id]

    sent = [f"frame {i}".encode() for i in range(100)]
    for frame in sent:
        a.node.send(b.node.peer_id, frame)
    await a.events.until(lambda: len(a.events.frames) == 100)

    assert [frame for _, frame in b.events.frames] == sent  # in order, all of them
    assert a.events.frames == [(b.node.peer_id, b"re:" + frame) for frame in sent]
    # one link stream carried all 200 frames: the dialler opened it, the listener accepted it
    assert (a.node.streams_opened, a.node.streams_accepted) == (1, 0)
    assert (b.node.streams_opened, b.node.streams_accepted) == (0, 1)

    # dialling again reuses the link
    assert await a.node.connect(b.addrs[0]) == b.node.peer_id
    assert await b.node.connect(a.addrs[0]) == a.node.peer_id
    assert a.node.streams_opened + b.node.streams_opened == 1


async def test_the_peer_id_is_libp2ps_own_id_of_the_seed_and_the_remote_sees_it(fleet: Fleet) -> None:
    seed = bytes(range(32))
    public = bytes(SigningKey(seed).verify_key)
    expected = ID.from_pubkey(Ed25519PublicKey.from_bytes(public)).to_base58()

    a = await fleet.site(seed=seed)
    b = await fleet.site()
    assert a.node.peer_id == expected and expected.startswith("12D3KooW")
    assert a.addrs[0].endswith(f"/p2p/{expected}")
    await a.node.connect(b.addrs[0])
    await b.events.until(lambda: bool(b.events.linked))
    assert b.events.linked == [expected]  # noise authenticated the same key
    assert peer_id_from_public_key(public) == expected  # federation.identity derives it without libp2p


async def test_ping_answers_with_a_positive_round_trip(fleet: Fleet) -> None:
    a = await fleet.site()
    b = await fleet.site()
    await a.node.connect(b.addrs[0])
    await b.events.until(lambda: bool(b.events.linked))
    assert await a.node.ping(b.node.peer_id) > 0
    assert await b.node.ping(a.node.peer_id) > 0


# -- refusals ------------------------------------------------------------------------------------
async def test_oversized_frames_unknown_peers_and_bad_addresses_are_refused(fleet: Fleet) -> None:
    a = await fleet.site(max_frame=1024)
    b = await fleet.site()
    await a.node.connect(b.addrs[0])

    with pytest.raises(TransportError, match="limit"):
        a.node.send(b.node.peer_id, b"z" * 1025)
    stranger = ID.from_pubkey(random_key_pair().public_key).to_base58()
    with pytest.raises(TransportError, match="no link"):
        a.node.send(stranger, b"hi")
    with pytest.raises(TransportError, match="no link"):
        await a.node.ping(stranger)
    with pytest.raises(TransportError, match="not a multiaddr"):
        await a.node.connect("/ip4/127.0.0.1/tcp/1")  # no /p2p/ part
    with pytest.raises(TransportError, match="own address"):
        await a.node.connect(a.addrs[0])
    with pytest.raises(TransportError):
        await a.node.connect(f"/ip4/127.0.0.1/tcp/{port_of(b.addrs[0])}/p2p/{stranger}", timeout=3.0)
    a.node.send(b.node.peer_id, b"still fine")
    await b.events.until(lambda: bool(b.events.frames))


async def test_a_peer_that_announces_an_oversized_frame_loses_its_link(fleet: Fleet) -> None:
    a = await fleet.site(max_frame=1 << 20)
    b = await fleet.site(max_frame=100)
    await a.node.connect(b.addrs[0])
    a.node.send(b.node.peer_id, b"x" * 101)
    await b.events.until(lambda: b.events.lost == [a.node.peer_id])
    await a.events.until(lambda: a.events.lost == [b.node.peer_id])
    assert b.events.frames == []


async def test_a_dial_offering_only_plaintext_security_is_refused(fleet: Fleet) -> None:
    b = await fleet.site()

    async def dial_in_plaintext() -> None:
        key_pair = random_key_pair()
        host = new_host(key_pair=key_pair, sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(key_pair)})
        async with host.run(listen_addrs=[Multiaddr(LOOPBACK)]):
            try:
                with trio.fail_after(WAIT_S):
                    await host.connect(info_from_p2p_addr(Multiaddr(b.addrs[0])))
                    await host.new_stream(ID.from_base58(b.node.peer_id), [LINK_PROTOCOL])  # type: ignore[list-item]
            finally:
                await host.close()

    with pytest.raises(BaseException) as refused:  # libp2p's own error, nested in trio's groups
        await asyncio.to_thread(trio.run, dial_in_plaintext)
    # the security negotiation failed: no address gave a connection (not a timeout, not a test bug)
    assert isinstance(unwrap(refused.value), SwarmDialAllFailedError)
    assert b.events.linked == [] and b.node.links() == []


# -- loss, redial, ports -------------------------------------------------------------------------
async def test_a_peer_that_goes_away_is_reported_lost_and_can_be_dialled_again(fleet: Fleet) -> None:
    a = await fleet.site()
    b = await fleet.site()
    await a.node.connect(b.addrs[0])
    await b.node.close()
    await a.events.until(lambda: a.events.lost == [b.node.peer_id])
    assert a.node.links() == []
    with pytest.raises(TransportError):
        a.node.send(b.node.peer_id, b"anyone?")

    # while it is down a dial fails (and py-libp2p would block the peer for 60 s) ...
    with pytest.raises(TransportError):
        await a.node.connect(b.addrs[0], timeout=3.0)
    # ... and once it is back on the same port with the same key, the next dial links at once
    back = await fleet.site(seed=b.seed, listen=f"/ip4/127.0.0.1/tcp/{port_of(b.addrs[0])}")
    assert back.node.peer_id == b.node.peer_id
    assert await a.node.connect(back.addrs[0]) == b.node.peer_id
    a.node.send(b.node.peer_id, b"welcome back")
    await back.events.until(lambda: back.events.frames == [(a.node.peer_id, b"welcome back")])
    assert a.events.linked == [b.node.peer_id, b.node.peer_id]


async def test_disconnect_ends_the_link_on_both_sides(fleet: Fleet) -> None:
    a = await fleet.site()
    b = await fleet.site()
    await a.node.connect(b.addrs[0])
    await b.events.until(lambda: bool(b.events.linked))
    await a.node.disconnect(b.node.peer_id)
    await a.events.until(lambda: a.events.lost == [b.node.peer_id])
    await b.events.until(lambda: b.events.lost == [a.node.peer_id])
    assert await b.node.connect(a.addrs[0]) == a.node.peer_id  # the other side may dial straight back


async def test_close_releases_the_listening_port(fleet: Fleet) -> None:
    a = await fleet.site()
    b = await fleet.site()
    await b.node.connect(a.addrs[0])
    port = port_of(a.addrs[0])
    await a.node.close()
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # accepted connections may sit in TIME_WAIT
        again.bind(("127.0.0.1", port))  # a listener still open would refuse this bind
        again.listen()


async def test_a_second_node_on_a_taken_port_is_refused(fleet: Fleet) -> None:
    a = await fleet.site()
    taken = f"/ip4/127.0.0.1/tcp/{port_of(a.addrs[0])}"
    with pytest.raises(TransportError, match="already in use"):
        await fleet.site(listen=taken)
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        with pytest.raises(TransportError, match="already in use"):
            await fleet.site(listen=f"/ip4/127.0.0.1/tcp/{plain.getsockname()[1]}")


async def test_both_sides_dialling_at_once_still_carry_frames_each_way(fleet: Fleet) -> None:
    a = await fleet.site()
    b = await fleet.site()
    ids = await asyncio.gather(a.node.connect(b.addrs[0]), b.node.connect(a.addrs[0]))
    assert ids == [b.node.peer_id, a.node.peer_id]
    await a.events.until(lambda: bool(a.events.linked))
    await b.events.until(lambda: bool(b.events.linked))
    a.node.send(b.node.peer_id, b"from a")
    b.node.send(a.node.peer_id, b"from b")
    await b.events.until(lambda: (a.node.peer_id, b"from a") in b.events.frames)
    await a.events.until(lambda: (b.node.peer_id, b"from b") in a.events.frames)
    assert a.events.lost == [] and b.events.lost == []


async def test_a_large_frame_crosses_the_link_whole(fleet: Fleet) -> None:
    a = await fleet.site(max_frame=8 << 20)
    b = await fleet.site(max_frame=8 << 20)
    await a.node.connect(b.addrs[0])
    big = os.urandom(8 << 20)
    a.node.send(b.node.peer_id, big)
    a.node.send(b.node.peer_id, b"after")
    await b.events.until(lambda: len(b.events.frames) == 2)
    assert b.events.frames == [(a.node.peer_id, big), (a.node.peer_id, b"after")]
