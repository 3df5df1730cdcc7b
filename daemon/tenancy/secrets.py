"""Secrets at rest: how passwords, API keys and the JWT signing key are made and kept.

- passwords: argon2id (libsodium's interactive limits), never stored in clear;
- API keys: ``dai_<8 hex>_<43 url-safe>``, 32 random bytes after the prefix, stored as
  sha256 only (a fast hash is right for a key that long) and shown once;
- the JWT signing key: 32 random bytes in ``<state_dir>/jwt.secret`` (0600).

Everything here is a plain function; only ``load_jwt_secret`` touches the disk.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from secrets import token_bytes, token_hex, token_urlsafe

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id

from daemon.runtime.files import atomic_write

KEY_PREFIX = "dai_"
JWT_SECRET_FILE = "jwt.secret"


def key_hash(key: str) -> str:
    """The stored form of an API key, and the authenticator's cache key."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> tuple[str, str]:
    """A fresh ``(prefix, key)``: the prefix (32 random bits) names the key in lists and logs."""
    prefix = KEY_PREFIX + token_hex(4)
    return prefix, f"{prefix}_{token_urlsafe(32)}"


def hash_password(password: str) -> str:
    """argon2id, libsodium's interactive limits (~0.1 s, 64 MiB): run it off the loop."""
    return argon2id.str(password.encode()).decode()


def verify_password(stored: str, password: str) -> bool:
    """True when ``password`` matches the argon2id hash ``stored``; as slow as hashing."""
    try:
        return bool(argon2id.verify(stored.encode(), password.encode()))
    except nacl.exceptions.CryptoError:
        return False


def generate_password() -> str:
    """A password for a user created without one: 120 random bits, 20 url-safe characters."""
    return token_urlsafe(15)


def load_jwt_secret(state_dir: str | Path) -> bytes:
    """The HS256 secret in ``<state_dir>/jwt.secret`` (0600), made at first start."""
    path = Path(state_dir) / JWT_SECRET_FILE
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        Path(state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        secret = token_bytes(32)
        atomic_write(path, (secret.hex() + "\n").encode(), private=True)
    if len(secret) < 32:
        raise ValueError(f"{path}: the JWT secret must be at least 32 bytes")
    return secret
