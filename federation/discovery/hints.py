"""What one hub says about itself over mDNS, and how a TXT record becomes a `PeerHint` (pure, bounded).

A hint is only a hint: it names a node id and where to dial it. Nothing in it is trusted; the link
checks the node's certificate after the Noise handshake. So the parsing here only has to be safe
(bounded, typed, never raising on junk) and round-trip what `txt_for` writes.

TXT layout (RFC 6763 key=value strings, each at most 255 bytes):

    txtvers=1  node=<node id>  fleet=<fleet id>  ver=<hub version>
    an=<n>  a0=... a<n-1>=...   the multiaddrs joined by "," and cut into <= 250-byte chunks
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

SERVICE_TYPE = "_democratic-ai._tcp.local."
TXT_VERSION = "1"

MAX_NODE_ID = 128
MAX_FLEET_ID = 128
MAX_VERSION = 64
MAX_ADDRS = 16
MAX_ADDR_LENGTH = 256
MAX_CHUNKS = 20  # 16 addrs x 256 bytes fit in 17 chunks of 250
MAX_KEYS = 40  # a well-formed record has at most 5 + MAX_CHUNKS keys
MAX_NAME_LENGTH = 255  # a DNS name
MAX_TXT_BYTES = 6144  # the whole TXT rdata, checked by the mDNS side before parsing
CHUNK_BYTES = 250  # "a19=" + 250 bytes stays within one 255-byte TXT string

_NODE_ID = re.compile(r"[A-Za-z0-9]{1,128}")
_FLEET_ID = re.compile(r"[A-Za-z0-9._-]{0,128}")
_VERSION = re.compile(r"[\x21-\x7e]{1,64}")
# printable ASCII without space and ",", which separates multiaddrs in the joined form
_ADDR = re.compile(r"/[\x21-\x2b\x2d-\x7e]{0,255}")


@dataclass(frozen=True, slots=True)
class PeerHint:
    """Another hub seen on the local network: its node id, fleet id, where to dial it, its version."""

    node_id: str
    fleet_id: str
    addrs: tuple[str, ...]
    version: str


def txt_for(node_id: str, fleet_id: str, addrs: Sequence[str], version: str) -> dict[str, str]:
    """The TXT records announcing this hub; raises ValueError for values `hint_from_service` would refuse.

    The multiaddrs are joined and cut into chunks, because one TXT string holds at most 255 bytes
    and a few multiaddrs ending in /p2p/<node id> already pass that.
    """
    if not _NODE_ID.fullmatch(node_id):
        raise ValueError(f"node id {node_id!r} must be 1..{MAX_NODE_ID} letters and digits")
    if not _FLEET_ID.fullmatch(fleet_id):
        raise ValueError(f"fleet id {fleet_id!r} must be at most {MAX_FLEET_ID} of [A-Za-z0-9._-]")
    if not _VERSION.fullmatch(version):
        raise ValueError(f"version {version!r} must be 1..{MAX_VERSION} printable ASCII characters")
    if len(addrs) > MAX_ADDRS:
        raise ValueError(f"at most {MAX_ADDRS} multiaddrs fit in the mDNS record, not {len(addrs)}")
    for addr in addrs:
        if not _ADDR.fullmatch(addr):
            raise ValueError(
                f"multiaddr {addr!r} must start with '/', be printable ASCII without ',' "
                f"and at most {MAX_ADDR_LENGTH} bytes"
            )
    joined = ",".join(addrs)
    chunks = [joined[i : i + CHUNK_BYTES] for i in range(0, len(joined), CHUNK_BYTES)]
    txt = {"txtvers": TXT_VERSION, "node": node_id, "fleet": fleet_id, "ver": version, "an": str(len(chunks))}
    txt.update({f"a{i}": chunk for i, chunk in enumerate(chunks)})
    return txt


def hint_from_service(
    name: str,
    properties: Mapping[bytes, bytes | None],
    *,
    addresses: Iterable[str] = (),
    port: int | None = None,
) -> PeerHint | None:
    """The hint a resolved `SERVICE_TYPE` service gives, or None when its record is junk.

    `addresses` and `port` are what mDNS resolved (A/AAAA and SRV records). When a TXT multiaddr
    does not already name one of those IPs, a `/ip4|ip6/<ip>/tcp/<port>/p2p/<node id>` multiaddr is
    added after the announced ones: a hub listening on 0.0.0.0 can only announce that, yet it is
    reachable at the address its mDNS responder answered with.
    Bad multiaddrs are dropped one by one; a hint left with none is None.
    """
    if len(name) > MAX_NAME_LENGTH or not name.endswith("." + SERVICE_TYPE):
        return None
    if not isinstance(properties, Mapping) or len(properties) > MAX_KEYS:
        return None
    if _text(properties, b"txtvers") != TXT_VERSION:
        return None
    node_id = _text(properties, b"node")
    fleet_id = _text(properties, b"fleet")
    version = _text(properties, b"ver")
    if node_id is None or not _NODE_ID.fullmatch(node_id):
        return None
    if fleet_id is None or not _FLEET_ID.fullmatch(fleet_id):
        return None
    if version is None or not _VERSION.fullmatch(version):
        return None
    announced = _announced_addrs(properties)
    if announced is None:
        return None
    addrs = list(announced)
    addrs.extend(_resolved_addrs(addresses, port, node_id, announced))
    if not addrs:
        return None
    return PeerHint(node_id=node_id, fleet_id=fleet_id, addrs=tuple(addrs[:MAX_ADDRS]), version=version)


def interface_ips(addrs: Iterable[str]) -> list[str]:
    """The IPs named by /ip4 and /ip6 multiaddrs that mDNS can announce on: not unspecified, not loopback.

    The default for `[mdns] interfaces = []`: the hosts the p2p side listens on. A hub listening on
    0.0.0.0 gets none, so mDNS never reaches every interface unless someone names them.
    """
    ips: list[str] = []
    for addr in addrs:
        parts = addr.split("/")
        if len(parts) < 3 or parts[1] not in ("ip4", "ip6"):
            continue
        try:
            ip = ipaddress.ip_address(parts[2])
        except ValueError:
            continue
        if ip.is_unspecified or ip.is_loopback or str(ip) in ips:
            continue
        ips.append(str(ip))
    return ips


def _text(properties: Mapping[bytes, bytes | None], key: bytes) -> str | None:
    """A TXT value as ASCII text, or None when absent, value-less, not bytes or not ASCII."""
    value = properties.get(key)
    if not isinstance(value, bytes):
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return None


def _announced_addrs(properties: Mapping[bytes, bytes | None]) -> list[str] | None:
    """The multiaddrs rejoined from the a0..a<n-1> chunks; None when the chunk keys are broken."""
    count_text = _text(properties, b"an")
    if count_text is None or not count_text.isdigit() or len(count_text) > 2:
        return None
    count = int(count_text)
    if count > MAX_CHUNKS:
        return None
    chunks: list[str] = []
    for i in range(count):
        chunk = _text(properties, f"a{i}".encode())
        if chunk is None:
            return None
        chunks.append(chunk)
    joined = "".join(chunks)
    if not joined:
        return []
    addrs: list[str] = []
    for addr in joined.split(",")[:MAX_ADDRS]:
        if _ADDR.fullmatch(addr) and addr not in addrs:
            addrs.append(addr)
    return addrs


def _resolved_addrs(addresses: Iterable[str], port: int | None, node_id: str, announced: list[str]) -> list[str]:
    """Multiaddrs for resolved IPs that no announced multiaddr names (see `hint_from_service`)."""
    if port is None or not 0 < port < 65536:
        return []
    named = {part for addr in announced for part in addr.split("/")}
    extra: list[str] = []
    for text in list(addresses)[:MAX_ADDRS]:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        # an IPv6 link-local address is useless without its zone, which a multiaddr cannot carry here
        if ip.is_unspecified or (ip.version == 6 and ip.is_link_local) or str(ip) in named:
            continue
        proto = "ip4" if ip.version == 4 else "ip6"
        extra.append(f"/{proto}/{ip}/tcp/{port}/p2p/{node_id}")
    return extra
