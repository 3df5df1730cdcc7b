"""Building the libp2p host: our key, Noise + yamux only, one connection per peer, no auto-dialling.

py-libp2p 0.8 quirks handled here, each where it bites:

- importing ``libp2p`` clears the ``libp2p`` logger's handlers and stops it propagating
  (``libp2p.utils.logging.setup_logging``): ``restore_logging`` routes it back into the hub's logging;
- with no ``sec_opt`` the host also offers TLS, SECIO and *plaintext*: we pass Noise alone;
- ``max_connections_per_peer`` above 1 makes every new stream wait 250 ms for a second connection;
- the swarm's AutoConnector redials any peer in the peerstore (and below ``min_connections`` = 50, at
  once): fleet dialling is ours (``PeerTable.to_redial``), so ``stop_auto_connect`` turns it off;
- TCP listeners set SO_REUSEPORT, so a second node on a taken port would silently share it:
  ``check_ports_free`` binds each fixed port plainly first and refuses a taken one.
"""

from __future__ import annotations

import errno
import logging
import os
import socket

import multiaddr
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_noise_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from federation.transport.errors import TransportError

SEED_BYTES = 32


def key_pair_from_seed(seed: bytes) -> KeyPair:
    """The Ed25519 key pair of our 32-byte node seed (the same seed always gives the same peer id)."""
    if len(seed) != SEED_BYTES:  # an empty seed would make libp2p pick a random key
        raise TransportError(f"node seed must be {SEED_BYTES} bytes, got {len(seed)}")
    return create_new_key_pair(seed)


def peer_id_of(key_pair: KeyPair) -> str:
    """The base58 peer id (``12D3KooW...``) of ``key_pair``."""
    return ID.from_pubkey(key_pair.public_key).to_base58()


def restore_logging() -> None:
    """Let the ``libp2p`` logger reach the hub's handlers again, at WARNING unless LIBP2P_DEBUG asks for more."""
    if os.environ.get("LIBP2P_DEBUG"):  # the operator asked for libp2p's own console logging: leave it
        return
    logger = logging.getLogger("libp2p")
    logger.propagate = True
    logger.setLevel(logging.WARNING)
    # auto_connector pins its own logger at INFO and chats on every start; it is switched off anyway
    logging.getLogger("libp2p.network.auto_connector").setLevel(logging.NOTSET)


def parse_listen(listen: list[str]) -> list[multiaddr.Multiaddr]:
    """The listen multiaddrs; TransportError for text that is not one, or not a TCP address."""
    if not listen:
        raise TransportError("no listen address given")
    addrs = []
    for text in listen:
        try:
            addr = multiaddr.Multiaddr(text)
        except Exception as exc:  # multiaddr raises several unrelated types for bad text
            raise TransportError(f"listen address {text!r} is not a multiaddr: {exc}") from exc
        names = [p.name for p in addr.protocols()]
        if len(names) != 2 or names[0] not in ("ip4", "ip6") or names[1] != "tcp":
            raise TransportError(f"listen address {text!r} must look like /ip4/<host>/tcp/<port>")
        addrs.append(addr)
    return addrs


def check_ports_free(addrs: list[multiaddr.Multiaddr]) -> None:
    """Refuse a fixed TCP port that something already listens on (libp2p's SO_REUSEPORT would share it)."""
    for addr in addrs:
        port = int(addr.value_for_protocol("tcp"))
        if port == 0:
            continue
        is_v6 = "ip6" in [p.name for p in addr.protocols()]
        host = addr.value_for_protocol("ip6" if is_v6 else "ip4")
        with socket.socket(socket.AF_INET6 if is_v6 else socket.AF_INET, socket.SOCK_STREAM) as probe:
            # SO_REUSEADDR (not REUSEPORT) so a port left in TIME_WAIT by our last run is free, while
            # a live listener, reuseport or not, still refuses the bind on Linux
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise TransportError(f"p2p listen {addr}: port {port} is already in use") from exc
                raise TransportError(f"p2p listen {addr}: {exc.strerror or exc}") from exc


def build_host(key_pair: KeyPair) -> IHost:
    """A libp2p host offering only /noise and /yamux/1.0.0, with identify and ping, over TCP."""
    noise = NoiseTransport(key_pair, noise_privkey=create_noise_key_pair().private_key)
    config = ConnectionConfig(max_connections_per_peer=1)
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={YAMUX_PROTOCOL_ID: Yamux},  # type: ignore[dict-item]
        connection_config=config,
        # advertised addresses are the ones we listen on; a LAN fleet has no use for NAT guesses
        disable_identify_address_discovery=True,
    )


async def stop_auto_connect(host: IHost) -> None:
    """Stop the swarm's AutoConnector (it would redial peers we dropped); call once the host runs."""
    connector = getattr(host.get_network(), "auto_connector", None)
    if connector is not None:
        await connector.stop()
