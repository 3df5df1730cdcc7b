"""A stock py-libp2p host talks to a hub's node: the hub speaks standard libp2p on the wire.

The other side here is ``libp2p.new_host`` with libp2p's own defaults (its security list, Noise
first, then TLS, SECIO and plaintext; its muxers, yamux then mplex) and a fresh key: nothing of
ours.  It dials the hub's ``Libp2pNode``, asks who it is with the standard identify protocol
(``/ipfs/id/1.0.0``) and pings it (``/ipfs/ping/1.0.0``: 32 random bytes, echoed).  A host
offering plaintext alone gets no connection at all.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import trio
from libp2p import new_host
from libp2p.abc import INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.host.ping import PING_LENGTH
from libp2p.identity.identify.identify import ID as IDENTIFY_PROTOCOL
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.network.exceptions import SwarmDialAllFailedError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.utils.varint import read_length_prefixed_protobuf
from multiaddr import Multiaddr

from federation.identity import NodeIdentity
from federation.transport import LINK_PROTOCOL, Libp2pNode
from federation.transport.errors import unwrap

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
WAIT_S = 8.0  # a guard against hanging, not a timing assertion
#: the most an identify answer may be: the hub's is a few hundred bytes
MAX_IDENTIFY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Hub:
    """A hub's libp2p node, started, with the key it was started from."""

    node: Libp2pNode
    identity: NodeIdentity
    addrs: list[str]


@dataclass(frozen=True, slots=True)
class WhatTheStockHostSaw:
    """What a stock libp2p host learnt from the hub, gathered in its trio thread."""

    remote_peer_id: str
    security: str | None
    muxer: str | None
    identify_peer_id: str
    identify_public_key: bytes
    identify_key_type: str
    protocols: list[str]
    listen_addrs: list[str]
    agent_version: str
    ping_sent: bytes
    ping_echo: bytes


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    identity = NodeIdentity.generate()
    node = Libp2pNode(identity.seed, [LOOPBACK], on_frame=lambda peer, frame: None,
                      on_link=lambda peer: None, on_link_lost=lambda peer: None)
    try:
        yield Hub(node, identity, await node.start())
    finally:
        await node.close()


async def read_exactly(stream: INetStream, size: int) -> bytes:
    """``size`` bytes from ``stream``, fewer only if it ends first."""
    data = b""
    while len(data) < size:
        chunk = await stream.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


async def stock_host_identifies_and_pings(addr: str) -> WhatTheStockHostSaw:
    """In trio: a libp2p host with every default dials ``addr``, runs identify, then one ping."""
    host = new_host(key_pair=create_new_key_pair())  # libp2p's default security and muxers
    info = info_from_p2p_addr(Multiaddr(addr))
    async with host.run(listen_addrs=[Multiaddr(LOOPBACK)]):
        try:
            with trio.fail_after(WAIT_S):
                await host.connect(info)
                conn = host.get_network().get_connections(info.peer_id)[0]

                stream = await host.new_stream(info.peer_id, [IDENTIFY_PROTOCOL])
                remote = stream.muxed_conn.peer_id.to_base58()
                # read as libp2p's own identify client reads it: one varint-length-prefixed protobuf
                answer = Identify()
                answer.ParseFromString(await read_length_prefixed_protobuf(stream, max_length=MAX_IDENTIFY_BYTES))
                key = deserialize_public_key(answer.public_key)

                ping = await host.new_stream(info.peer_id, [PING_PROTOCOL])
                sent = secrets.token_bytes(PING_LENGTH)
                await ping.write(sent)
                echo = await read_exactly(ping, PING_LENGTH)
                await ping.close()
        finally:
            await host.close()
    return WhatTheStockHostSaw(
        remote_peer_id=remote,
        security=getattr(conn, "get_negotiated_security_protocol", lambda: None)(),
        muxer=getattr(conn, "get_negotiated_muxer_protocol", lambda: None)(),
        identify_peer_id=ID.from_pubkey(key).to_base58(),
        identify_public_key=key.to_bytes(),
        identify_key_type=key.get_type().name,
        protocols=list(answer.protocols),
        listen_addrs=[str(Multiaddr(raw)) for raw in answer.listen_addrs],
        agent_version=answer.agent_version,
        ping_sent=sent,
        ping_echo=echo,
    )


async def test_a_stock_libp2p_host_identifies_the_hub_and_pings_it(hub: Hub) -> None:
    saw = await asyncio.to_thread(trio.run, stock_host_identifies_and_pings, hub.addrs[0])

    # the connection is standard libp2p: Noise, then yamux, negotiated by multistream-select
    assert (saw.security, saw.muxer) == ("/noise", "/yamux/1.0.0")
    # Noise authenticated the hub's node key, and identify names the same key
    assert saw.remote_peer_id == hub.node.peer_id == hub.identity.peer_id
    assert saw.identify_key_type == "Ed25519"
    assert saw.identify_public_key == hub.identity.public_key
    assert saw.identify_peer_id == hub.node.peer_id
    # the hub lists its protocols: the fleet link beside the standard identify and ping
    assert {LINK_PROTOCOL, str(PING_PROTOCOL), str(IDENTIFY_PROTOCOL)} <= set(saw.protocols)
    # and where it listens, as plain transport addresses (identify carries no /p2p suffix)
    assert hub.addrs[0].removesuffix(f"/p2p/{hub.node.peer_id}") in saw.listen_addrs
    assert saw.agent_version  # whatever libp2p calls itself, it says something
    # a standard ping: the 32 random bytes come back as they went
    assert len(saw.ping_sent) == PING_LENGTH == 32
    assert saw.ping_echo == saw.ping_sent
    assert hub.node.links() == []  # identify and ping alone make no fleet link


async def test_a_stock_host_offering_only_plaintext_gets_no_connection(hub: Hub) -> None:
    async def dial_in_plaintext() -> None:
        key_pair = create_new_key_pair()
        host = new_host(key_pair=key_pair, sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(key_pair)})
        async with host.run(listen_addrs=[Multiaddr(LOOPBACK)]):
            try:
                with trio.fail_after(WAIT_S):
                    await host.connect(info_from_p2p_addr(Multiaddr(hub.addrs[0])))
                    await host.new_stream(ID.from_base58(hub.node.peer_id), [IDENTIFY_PROTOCOL])
            finally:
                await host.close()

    with pytest.raises(BaseException) as refused:  # libp2p's own error, nested in trio's groups
        await asyncio.to_thread(trio.run, dial_in_plaintext)
    # the security negotiation failed, so no address gave a connection (not a timeout)
    assert isinstance(unwrap(refused.value), SwarmDialAllFailedError)
    assert hub.node.links() == []
