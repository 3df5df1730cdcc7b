"""Who a hub is: its node key and the libp2p peer id derived from it.

Each hub holds one Ed25519 key, a 32-byte seed in ``<state dir>/node.key`` (0600), made at first
use.  Its libp2p peer id (``12D3KooW…``) is derived from the public key the way libp2p derives it,
so the id Noise authenticates on a link *is* the key that signs that peer's messages, and
``public_key_from_peer_id`` gets the key back from the id alone.  Whom a hub trusts — the fleet
key, node certificates, ``FleetTrust`` — is ``federation/fleet.py``.

Everything read from a file or the network is bounded and type-checked; a bad one raises
``IdentityError`` with a message that says what is wrong.  Nothing here does network I/O.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from nacl.bindings import crypto_core_ed25519_is_valid_point
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

NODE_KEY_FILE = "node.key"

SEED_BYTES = 32
KEY_BYTES = 32
SIGNATURE_BYTES = 64
#: the largest certificate or key file read, as text
MAX_TEXT_BYTES = 8192
MAX_PEER_ID = 128

# libp2p's peer id of an Ed25519 key: multihash identity (0x00, length 0x24) of the protobuf
# PublicKey {Type (field 1) = 1 (Ed25519), Data (field 2) = 32 bytes}
_PEER_ID_PREFIX = bytes((0x00, 0x24, 0x08, 0x01, 0x12, 0x20))
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}


class IdentityError(Exception):
    """A key, a certificate or a key file that cannot be used; the message says what is wrong."""


# -- base58btc, as libp2p writes peer ids ---------------------------------------------------------


def _b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = []
    while number:
        number, digit = divmod(number, 58)
        out.append(_B58_ALPHABET[digit])
    zeros = len(data) - len(data.lstrip(b"\x00"))  # each leading zero byte is a leading "1"
    return "1" * zeros + "".join(reversed(out))


def _b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        digit = _B58_INDEX.get(char)
        if digit is None:
            raise IdentityError(f"{text[:MAX_PEER_ID]!r} is not base58: {char!r}")
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\x00" * zeros + body


# -- keys and peer ids -----------------------------------------------------------------------------


def peer_id_from_public_key(pub: bytes) -> str:
    """The libp2p peer id of an Ed25519 public key (``12D3KooW…``), as libp2p's ``ID.from_pubkey`` makes it."""
    if not isinstance(pub, bytes) or len(pub) != KEY_BYTES:
        raise IdentityError(f"an Ed25519 public key is {KEY_BYTES} bytes")
    return _b58encode(_PEER_ID_PREFIX + pub)


def public_key_from_peer_id(peer_id: str) -> bytes:
    """The Ed25519 public key a peer id carries; IdentityError for anything but an Ed25519 identity peer id."""
    if not isinstance(peer_id, str) or not 0 < len(peer_id) <= MAX_PEER_ID:
        raise IdentityError("a peer id is a base58 text of at most 128 characters")
    raw = _b58decode(peer_id)
    if len(raw) != len(_PEER_ID_PREFIX) + KEY_BYTES or not raw.startswith(_PEER_ID_PREFIX):
        raise IdentityError(f"{peer_id!r} is not the peer id of an Ed25519 key")
    return raw[len(_PEER_ID_PREFIX):]


def public_key_from_text(text: str) -> bytes:
    """A node public key as an operator writes it: base64 (32 bytes) or the node's peer id (``12D3KooW…``)."""
    text = text.strip()
    if not text or len(text) > MAX_PEER_ID:
        raise IdentityError("a node key is its base64 public key or its node id (12D3KooW...)")
    if text.startswith("12D3KooW"):
        return public_key_from_peer_id(text)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise IdentityError(f"{text!r} is neither a base64 public key nor a node id") from None
    if len(raw) != KEY_BYTES:
        raise IdentityError(f"{text!r} is {len(raw)} bytes, not a {KEY_BYTES}-byte Ed25519 public key")
    return raw


def verify(pub: bytes, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``pub``'s Ed25519 signature over ``data``; never raises for bad input."""
    if not (isinstance(pub, bytes) and len(pub) == KEY_BYTES and isinstance(signature, bytes)
            and len(signature) == SIGNATURE_BYTES and isinstance(data, bytes)):
        return False
    try:
        VerifyKey(pub).verify(data, signature)
    except (BadSignatureError, CryptoError, ValueError, TypeError):
        return False
    return True


def new_seed() -> bytes:
    """32 random bytes that make a valid Ed25519 key (a node key or a fleet key)."""
    # libp2p refuses a seed whose public key libsodium does not call a valid point (its own
    # generator retries too); for real keys this never happens, but the hub must not make one
    for _ in range(100):
        seed = os.urandom(SEED_BYTES)
        if crypto_core_ed25519_is_valid_point(bytes(SigningKey(seed).verify_key)):
            return seed
    raise IdentityError("could not make a valid Ed25519 key")  # pragma: no cover - the OS's random is broken


def create_exclusive(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` 0600 unless it exists; False when another writer was first.

    The bytes are written and fsynced under a temporary name, then hard-linked into place:
    ``link`` fails when the name exists, so two processes starting at once (the hub and a
    ``node id``) never each keep a different key, and no one ever reads half a file.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """At most ``limit`` bytes of ``path``; IdentityError naming ``what`` when it is unreadable or larger."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise IdentityError(f"no {what} at {path}") from None
    except IsADirectoryError:
        raise IdentityError(f"{path} is a directory, not a {what}") from None
    except PermissionError:
        raise IdentityError(f"cannot read the {what} at {path}: permission denied") from None
    if len(data) > limit:
        raise IdentityError(f"{path} is over {limit} bytes: not a {what}")
    return data


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """This hub's Ed25519 node key; its public key and peer id are derived from the 32-byte seed."""

    seed: bytes = field(repr=False)
    _signing: SigningKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != SEED_BYTES:
            raise IdentityError(f"a node key is a {SEED_BYTES}-byte Ed25519 seed")
        object.__setattr__(self, "_signing", SigningKey(self.seed))

    def __repr__(self) -> str:
        return f"NodeIdentity(peer_id={self.peer_id!r})"

    @classmethod
    def generate(cls) -> NodeIdentity:
        """A fresh node key, in memory only."""
        return cls(new_seed())

    @classmethod
    def load_or_create(cls, state_dir: Path) -> NodeIdentity:
        """The node key in ``state_dir`` (``node.key``), made there (0600) if absent."""
        path = Path(state_dir) / NODE_KEY_FILE
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            create_exclusive(path, new_seed())  # False: another process made it first; read theirs
        seed = read_bounded(path, SEED_BYTES, "node key")
        if len(seed) != SEED_BYTES:
            raise IdentityError(f"{path} is {len(seed)} bytes, not a {SEED_BYTES}-byte Ed25519 seed")
        return cls(seed)

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        return bytes(self._signing.verify_key)

    @property
    def public_key_b64(self) -> str:
        """The public key in base64, as ``node id`` prints it and ``[fleet] trusted_keys`` holds it."""
        return base64.b64encode(self.public_key).decode()

    @property
    def peer_id(self) -> str:
        """The libp2p peer id, which is this hub's node id."""
        return peer_id_from_public_key(self.public_key)

    def sign(self, data: bytes) -> bytes:
        """A 64-byte detached Ed25519 signature over ``data``."""
        return self._signing.sign(data).signature
