"""Tenancy's values and records: ids, times, password and key hashing, input checks, and
the frozen records the store hands out.  No database here (daemon/tenancy.py is the store)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id

from daemon.core.errors import ValidationError
from daemon.runtime.config import parse_rate
from daemon.tenancy.rbac import ROLE_NAMES

_TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}$")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # fixed width UTC, so text order is time order in SQL

# -- values ---------------------------------------------------------------------------------


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime(_TIME_FORMAT)


def from_iso(text: str) -> float:
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC).timestamp()


def key_hash(key: str) -> str:
    """The stored form of an API key, and the authenticator's cache key."""
    return hashlib.sha256(key.encode()).hexdigest()


def hash_password(password: str) -> str:
    """argon2id, libsodium's interactive limits (~0.1 s, 64 MiB): run it off the loop."""
    return argon2id.str(password.encode()).decode()


def verify_password(stored: str, password: str) -> bool:
    try:
        return bool(argon2id.verify(stored.encode(), password.encode()))
    except nacl.exceptions.CryptoError:
        return False


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def check_role(role: str) -> str:
    if role not in ROLE_NAMES:
        raise ValidationError(
            f"role: {role!r} is not one of {', '.join(ROLE_NAMES)}", {"field": "role"}
        )
    return role


def check_rate(rate: str | None) -> str | None:
    if rate is None:
        return None
    try:
        parse_rate(rate)
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"rate_limit: {exc}", {"field": "rate_limit"}) from None
    return rate.strip()


def check_tenant_name(name: str) -> str:
    if not isinstance(name, str) or not _TENANT_NAME.match(name):
        raise ValidationError(
            f"name: {name!r} is not a tenant name (letters, digits, '_', '.', '-'; up to 64)",
            {"field": "name"},
        )
    return name


def check_email(email: str) -> str:
    if not isinstance(email, str) or not _EMAIL.match(email.strip()):
        raise ValidationError(f"email: {email!r} is not an e-mail address", {"field": "email"})
    return email.strip().lower()


def check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < 8:
        raise ValidationError("password: must be at least 8 characters", {"field": "password"})
    return password


# -- records --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    plan: str
    status: str
    timezone: str
    credits_enabled: bool
    created_at: str

    @property
    def active(self) -> bool:
        return self.status == "active"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class User:
    """A person; the password hash never leaves the store except to verify a login."""

    id: str
    tenant_id: str
    email: str | None  # None once deleted (GDPR): the id stays for anonymous billing
    role: str
    status: str
    created_at: str

    @property
    def subject(self) -> str:
        return f"user:{self.id}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A machine credential's metadata; the key itself is shown once and never stored."""

    id: str
    tenant_id: str
    prefix: str
    role: str
    scopes: tuple[str, ...]
    rate_limit: str | None
    expires_at: str | None
    revoked_at: str | None
    created_by: str
    created_at: str
    last_used_at: str | None

    @property
    def subject(self) -> str:
        return f"key:{self.prefix}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["scopes"] = list(self.scopes)
        return data


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """What authentication needs about a key on a cache miss: the key and its tenant."""

    key: ApiKey
    tenant: Tenant


@dataclass(frozen=True, slots=True)
class UserGrant:
    """What authentication needs about a JWT on a cache miss (None: not there)."""

    user: User | None
    tenant: Tenant | None
    token_revoked: bool


@dataclass(frozen=True, slots=True)
class LoginRecord:
    tenant: Tenant
    user: User
    password_hash: str


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit row: who did what to which resource, from where, and how it ended."""

    action: str
    actor: str
    tenant_id: str | None = None
    resource: str = ""
    ip: str = ""
    user_agent: str = ""
    success: bool = True
    error: str = ""
    at: str = field(default_factory=lambda: iso(time.time()))


def tenant_from_row(row: dict[str, Any]) -> Tenant:
    return Tenant(
        id=row["id"],
        name=row["name"],
        plan=row["plan"],
        status=row["status"],
        timezone=row["timezone"],
        credits_enabled=bool(row["credits_enabled"]),
        created_at=row["created_at"],
    )


def user_from_row(row: dict[str, Any]) -> User:
    return User(
        id=row["id"],
        tenant_id=row["tenant_id"],
        email=row["email"],
        role=row["role"],
        status=row["status"],
        created_at=row["created_at"],
    )


def key_from_row(row: dict[str, Any]) -> ApiKey:
    return ApiKey(
        id=row["id"],
        tenant_id=row["tenant_id"],
        prefix=row["prefix"],
        role=row["role"],
        scopes=tuple(json.loads(row["scopes"] or "[]")),
        rate_limit=row["rate_limit"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
    )
