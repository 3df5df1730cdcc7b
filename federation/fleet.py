"""Whom a hub trusts: the fleet key, node certificates, and the one trust decision.

- **Fleet key.** The operator's ``fleet init`` makes an Ed25519 key that never sits on a hub.
  The fleet id is derived from its public key (a hash), so no one can claim a fleet's id
  without holding the key whose hash it is.
- **Node certificate.** ``fleet sign`` signs, with the fleet key, a node's public key, the fleet
  id and name, the site name, the role and a validity period.  The certificate carries the
  fleet's public key, so a hub that installs one (``fleet join``) learns its fleet from it.
- **Trust.** ``FleetTrust.admit`` is the one decision: a peer is admitted with a certificate of
  this hub's own fleet, signed by the fleet key, for the very key the transport authenticated,
  and valid now; or when its key is one of ``[fleet] trusted_keys``.  Anything else raises
  ``PeerRefused`` with a short reason, the label of the refusal metric.

Everything read from a file or the network is bounded and type-checked; a bad one raises
``IdentityError`` (or ``PeerRefused("malformed")``).  Every time check takes ``now``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from nacl.signing import SigningKey

from daemon.runtime.files import atomic_write
from federation.identity import (
    KEY_BYTES,
    MAX_TEXT_BYTES,
    SEED_BYTES,
    SIGNATURE_BYTES,
    IdentityError,
    NodeIdentity,
    create_exclusive,
    new_seed,
    peer_id_from_public_key,
    public_key_from_peer_id,
    public_key_from_text,
    read_bounded,
    verify,
)

CERT_FILE = "fleet/node.cert"
FLEET_KEY_FILE = "fleet.key"
FLEET_PUB_FILE = "fleet.pub"

#: the largest certificate (msgpack) read from a file or a peer
MAX_CERT_BYTES = 4096
#: site and fleet names
MAX_NAME = 64
MAX_DAYS = 3650
SECONDS_A_DAY = 86400.0
#: how far a peer's clock may be behind the issuer's: a certificate is valid from issued_at minus this
CERT_SKEW_S = 300.0
ROLES = ("site", "central")

CERT_LABEL = "DEMOCRATIC-AI NODE CERTIFICATE"
FLEET_KEY_LABEL = "DEMOCRATIC-AI FLEET KEY"
CERT_VERSION = 1
FLEET_KEY_VERSION = 1
#: domain separation: a fleet signature over a certificate can never be read as any other signed thing
_CERT_DOMAIN = b"democratic-ai node certificate v1\x00"


class PeerRefused(Exception):
    """A peer this hub does not trust; ``reason`` is a short word, the label of the refusal metric.

    Reasons: ``no_certificate``, ``bad_signature``, ``expired``, ``not_yet_valid``, ``other_fleet``,
    ``key_mismatch``, ``malformed`` (and any word a caller adds, such as ``no_hello``).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"peer refused: {reason}" + (f" ({detail})" if detail else ""))
        self.reason = reason
        self.detail = detail




# -- the fleet key and node certificates ----------------------------------------------------------


def fleet_id_of(fleet_public_key: bytes) -> str:
    """``fleet-`` and 16 base32 letters of the fleet public key's hash: an id only that key's holder can claim."""
    digest = hashlib.blake2b(fleet_public_key, digest_size=10).digest()
    return "fleet-" + base64.b32encode(digest).decode().lower().rstrip("=")


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME or not value.isprintable():
        raise IdentityError(f"{what} must be 1 to {MAX_NAME} printable characters")
    return value


def _armor(label: str, data: bytes) -> str:
    text = base64.b64encode(data).decode()
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"]) + "\n"


def _unarmor(label: str, text: str | bytes, what: str) -> bytes:
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise IdentityError(f"not a {what}: not ASCII text") from None
    if len(text) > MAX_TEXT_BYTES:
        raise IdentityError(f"not a {what}: over {MAX_TEXT_BYTES} characters")
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) < 2 or lines[0] != begin or lines[-1] != end:
        raise IdentityError(f"not a {what}: it must start with {begin!r} and end with {end!r}")
    try:
        return base64.b64decode("".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        raise IdentityError(f"not a {what}: its body is not base64") from None


def _unpack_map(data: bytes, limit: int, what: str) -> dict[str, Any]:
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, max_str_len=limit,
                                max_bin_len=limit, max_array_len=16, max_map_len=16, max_ext_len=0)
    except (ValueError, msgpack.UnpackException) as exc:  # ExtraData, FormatError, StackError, ...
        raise IdentityError(f"not a {what}: {type(exc).__name__}") from None
    if not isinstance(value, dict):
        raise IdentityError(f"not a {what}: not a map")
    return value


def _field(record: dict[str, Any], name: str, kind: type, what: str) -> Any:
    value = record.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise IdentityError(f"{what}: field {name!r} is missing or not {kind.__name__}")
    return value


def _time_field(record: dict[str, Any], name: str, what: str) -> float:
    value = record.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise IdentityError(f"{what}: field {name!r} is missing or not a time")
    return float(value)


@dataclass(frozen=True, slots=True)
class NodeCertificate:
    """The fleet's signature over one node's key, site, role and validity period."""

    fleet_public_key: bytes
    fleet_id: str
    fleet_name: str
    node_public_key: bytes
    site: str
    role: str
    issued_at: float
    expires_at: float
    signature: bytes

    @property
    def node_id(self) -> str:
        """The peer id of the node this certificate is for."""
        return peer_id_from_public_key(self.node_public_key)

    def signed_bytes(self) -> bytes:
        """What the fleet key signs: a fixed-order msgpack array behind a domain prefix."""
        return _CERT_DOMAIN + msgpack.packb(
            [self.fleet_public_key, self.fleet_id, self.fleet_name, self.node_public_key, self.site, self.role,
             float(self.issued_at), float(self.expires_at)], use_bin_type=True)

    def check_signature(self) -> None:
        """IdentityError unless the fleet key signed exactly this certificate and the fleet id is that key's."""
        if fleet_id_of(self.fleet_public_key) != self.fleet_id:
            raise IdentityError(f"the certificate's fleet id {self.fleet_id!r} is not its fleet key's")
        if not verify(self.fleet_public_key, self.signed_bytes(), self.signature):
            raise IdentityError("the certificate's signature does not verify with its fleet key")

    def to_bytes(self) -> bytes:
        """The certificate as versioned msgpack (what a hello carries)."""
        return msgpack.packb({
            "v": CERT_VERSION, "fleet_key": self.fleet_public_key, "fleet_id": self.fleet_id,
            "fleet_name": self.fleet_name, "node_key": self.node_public_key, "site": self.site, "role": self.role,
            "issued_at": float(self.issued_at), "expires_at": float(self.expires_at), "sig": self.signature,
        }, use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> NodeCertificate:
        """A certificate from msgpack bytes, every field checked (not the signature); IdentityError if bad."""
        what = "a node certificate"
        if not isinstance(data, bytes):
            raise IdentityError(f"{what} is bytes")
        if len(data) > MAX_CERT_BYTES:
            raise IdentityError(f"{what} is at most {MAX_CERT_BYTES} bytes, not {len(data)}")
        record = _unpack_map(data, MAX_CERT_BYTES, what)
        if record.get("v") != CERT_VERSION:
            raise IdentityError(f"{what} of version {record.get('v')!r}; this hub reads version {CERT_VERSION}")
        expected = {"v", "fleet_key", "fleet_id", "fleet_name", "node_key", "site", "role", "issued_at",
                    "expires_at", "sig"}
        if set(record) != expected:
            raise IdentityError(f"{what} has fields {sorted(map(str, record))}, not {sorted(expected)}")
        cert = cls(
            fleet_public_key=_field(record, "fleet_key", bytes, what),
            fleet_id=_field(record, "fleet_id", str, what),
            fleet_name=_field(record, "fleet_name", str, what),
            node_public_key=_field(record, "node_key", bytes, what),
            site=_field(record, "site", str, what),
            role=_field(record, "role", str, what),
            issued_at=_time_field(record, "issued_at", what),
            expires_at=_time_field(record, "expires_at", what),
            signature=_field(record, "sig", bytes, what),
        )
        if len(cert.fleet_public_key) != KEY_BYTES or len(cert.node_public_key) != KEY_BYTES:
            raise IdentityError(f"{what}'s keys are {KEY_BYTES} bytes each")
        if len(cert.signature) != SIGNATURE_BYTES:
            raise IdentityError(f"{what}'s signature is {SIGNATURE_BYTES} bytes")
        if cert.role not in ROLES:
            raise IdentityError(f"{what}'s role is {cert.role[:16]!r}, not one of {', '.join(ROLES)}")
        _check_name(cert.site, f"{what}'s site")
        _check_name(cert.fleet_name, f"{what}'s fleet name")
        if len(cert.fleet_id) > MAX_NAME:
            raise IdentityError(f"{what}'s fleet id is too long")
        return cert

    def to_text(self) -> str:
        """The armored text form ``fleet sign`` writes and ``fleet join`` reads."""
        return _armor(CERT_LABEL, self.to_bytes())

    @classmethod
    def from_text(cls, text: str | bytes) -> NodeCertificate:
        """A certificate from its armored text; IdentityError for anything else."""
        return cls.from_bytes(_unarmor(CERT_LABEL, text, "node certificate"))


@dataclass(frozen=True, slots=True)
class FleetKey:
    """The fleet's Ed25519 key, kept on the operator's machine; it signs node certificates."""

    seed: bytes = field(repr=False)
    public_key: bytes
    fleet_id: str
    name: str

    @classmethod
    def from_seed(cls, seed: bytes, name: str) -> FleetKey:
        """The fleet key of ``seed``, with its public key and fleet id derived."""
        if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
            raise IdentityError(f"a fleet key is a {SEED_BYTES}-byte Ed25519 seed")
        public_key = bytes(SigningKey(seed).verify_key)
        return cls(seed, public_key, fleet_id_of(public_key), _check_name(name, "the fleet name"))

    @classmethod
    def generate(cls, name: str) -> FleetKey:
        """A new fleet key named ``name``."""
        return cls.from_seed(new_seed(), name)

    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write ``fleet.key`` (0600) and ``fleet.pub`` into ``directory``; IdentityError if a key is there."""
        directory = Path(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_path, pub_path = directory / FLEET_KEY_FILE, directory / FLEET_PUB_FILE
        secret = _armor(FLEET_KEY_LABEL, msgpack.packb(
            {"v": FLEET_KEY_VERSION, "seed": self.seed, "name": self.name}, use_bin_type=True))
        # a fleet key is never overwritten: losing it means re-signing every node of the fleet
        if not create_exclusive(key_path, secret.encode()):
            raise IdentityError(f"{key_path} exists: a fleet key is never overwritten (choose another --out)")
        public = {"fleet_id": self.fleet_id, "name": self.name,
                  "public_key": base64.b64encode(self.public_key).decode()}
        atomic_write(pub_path, (json.dumps(public, indent=2) + "\n").encode())
        return key_path, pub_path

    @classmethod
    def load(cls, key_file: Path) -> FleetKey:
        """The fleet key in ``key_file`` (as ``save`` wrote it); IdentityError if missing or not one."""
        what = "fleet key"
        data = _unarmor(FLEET_KEY_LABEL, read_bounded(Path(key_file), MAX_TEXT_BYTES, what), what)
        record = _unpack_map(data, MAX_TEXT_BYTES, what)
        if record.get("v") != FLEET_KEY_VERSION:
            raise IdentityError(f"{key_file}: a {what} of version {record.get('v')!r}")
        return cls.from_seed(_field(record, "seed", bytes, what), _field(record, "name", str, what))

    def sign_node(self, node_public_key: bytes, site: str, role: str = "site", days: int = 365, *,
                  now: float) -> NodeCertificate:
        """A certificate for ``node_public_key`` as ``site`` with ``role``, valid from ``now`` for ``days``."""
        if not isinstance(node_public_key, bytes) or len(node_public_key) != KEY_BYTES:
            raise IdentityError(f"a node public key is {KEY_BYTES} bytes")
        _check_name(site, "the site name")
        if role not in ROLES:
            raise IdentityError(f"the role is one of {', '.join(ROLES)}, not {role!r}")
        if isinstance(days, bool) or not isinstance(days, int | float) or not 0 < days <= MAX_DAYS:
            raise IdentityError(f"a certificate is valid for 1 to {MAX_DAYS} days, not {days!r}")
        unsigned = NodeCertificate(self.public_key, self.fleet_id, self.name, node_public_key, site, role,
                                   float(now), float(now) + days * SECONDS_A_DAY, b"")
        signature = SigningKey(self.seed).sign(unsigned.signed_bytes()).signature
        return NodeCertificate(self.public_key, self.fleet_id, self.name, node_public_key, site, role,
                               unsigned.issued_at, unsigned.expires_at, signature)


# -- the trust decision ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrustedPeer:
    """A peer admitted to this hub's fleet; ``site`` is ``""`` and ``fleet_id`` ``""`` for a trusted key alone."""

    peer_id: str
    public_key: bytes
    site: str
    role: str
    fleet_id: str


@dataclass(frozen=True, slots=True)
class FleetTrust:
    """Whom this hub trusts: its own certificate's fleet, and node keys listed in ``[fleet] trusted_keys``."""

    own: NodeCertificate | None
    trusted_keys: frozenset[bytes] = frozenset()

    @property
    def federates(self) -> bool:
        """Whether anyone can be admitted at all (a hub with neither runs alone)."""
        return self.own is not None or bool(self.trusted_keys)

    def admit(self, peer_id: str, cert: NodeCertificate | None, now: float) -> TrustedPeer:
        """The peer ``peer_id`` (authenticated by the transport) as trusted, or PeerRefused with the reason.

        A certificate must verify with its fleet key, be of this hub's own fleet, be for the key
        ``peer_id`` carries (so a certificate copied from another node is worthless) and be valid
        at ``now``.  A key in ``trusted_keys`` is admitted whatever its certificate says.
        """
        try:
            key = public_key_from_peer_id(peer_id)
        except IdentityError as exc:
            raise PeerRefused("malformed", str(exc)) from None
        try:
            return self._by_certificate(peer_id, key, cert, now)
        except PeerRefused:
            if key not in self.trusted_keys:
                raise
            return TrustedPeer(peer_id, key, site="", role="site", fleet_id="")

    def _by_certificate(self, peer_id: str, key: bytes, cert: NodeCertificate | None, now: float) -> TrustedPeer:
        if cert is None:
            raise PeerRefused("no_certificate")
        try:
            cert.check_signature()
        except IdentityError as exc:
            raise PeerRefused("bad_signature", str(exc)) from None
        if self.own is None or cert.fleet_public_key != self.own.fleet_public_key:
            raise PeerRefused("other_fleet", cert.fleet_id)
        if cert.node_public_key != key:
            raise PeerRefused("key_mismatch", f"the certificate is for {cert.node_id}, the link is {peer_id}")
        if now < cert.issued_at - CERT_SKEW_S:
            raise PeerRefused("not_yet_valid")
        if now >= cert.expires_at:
            raise PeerRefused("expired")
        return TrustedPeer(peer_id, key, site=cert.site, role=cert.role, fleet_id=cert.fleet_id)


def cert_path_of(state_dir: Path, cert_path: str = "") -> Path:
    """Where the node certificate is: ``[fleet] cert`` when set, else ``<state dir>/fleet/node.cert``."""
    return Path(cert_path) if cert_path else Path(state_dir) / CERT_FILE


def load_certificate(path: Path) -> NodeCertificate:
    """The certificate in ``path``, its signature checked; IdentityError naming the file if it is not one."""
    data = read_bounded(path, MAX_TEXT_BYTES, "node certificate")
    try:
        cert = NodeCertificate.from_text(data)
        cert.check_signature()
    except IdentityError as exc:
        raise IdentityError(f"{path}: {exc}") from None
    return cert


def load_trust(state_dir: Path, cert_path: str, trusted_keys: list[str], *,
               identity: NodeIdentity | None = None) -> FleetTrust:
    """This hub's trust from its config: the certificate (none when its file is missing) and trusted keys.

    With ``identity``, a certificate for another node's key is refused here, at start, rather
    than by every peer.
    """
    path = cert_path_of(state_dir, cert_path)
    own = load_certificate(path) if path.exists() else None
    if own is not None and identity is not None and own.node_public_key != identity.public_key:
        raise IdentityError(f"{path} is the certificate of node {own.node_id}, not of this node {identity.peer_id}")
    keys = set()
    for index, text in enumerate(trusted_keys):
        if not isinstance(text, str):
            raise IdentityError(f"[fleet] trusted_keys[{index}] is not a text")
        try:
            keys.add(public_key_from_text(text))
        except IdentityError as exc:
            raise IdentityError(f"[fleet] trusted_keys[{index}]: {exc}") from None
    return FleetTrust(own=own, trusted_keys=frozenset(keys))


def install_certificate(state_dir: Path, cert_file_text: str | bytes, identity: NodeIdentity, *,
                        now: float | None = None) -> Path:
    """``fleet join``: check the certificate is the fleet's and for this node's key, then write it (0600).

    With ``now``, an expired certificate is refused too.  Returns the path written.
    """
    cert = NodeCertificate.from_text(cert_file_text)
    cert.check_signature()
    if cert.node_public_key != identity.public_key:
        raise IdentityError(f"this certificate is for node {cert.node_id}, not this node {identity.peer_id}")
    if now is not None and now >= cert.expires_at:
        raise IdentityError("this certificate has expired: ask the fleet's operator for a new one")
    path = Path(state_dir) / CERT_FILE
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)  # mkdir leaves an existing directory's mode as it was
    atomic_write(path, cert.to_text().encode(), private=True)
    return path
