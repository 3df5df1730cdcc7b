"""Tenancy's vocabulary: the frozen records the store hands out, times as text, and the
checks on what callers give (names, e-mails, roles, rates, passwords).

No database (store.py) and no secrets (secrets.py) here.  Every check raises
ValidationError naming the field, so a door can answer INVALID_ARGUMENT as it is.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from daemon.core.errors import ValidationError
from daemon.core.i18n import t
from daemon.runtime.config import parse_rate
from daemon.tenancy.rbac import ROLE_NAMES

_TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}$")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # fixed width UTC, so text order is time order in SQL

# -- times and checks -----------------------------------------------------------------------


def iso(ts: float) -> str:
    """``ts`` (epoch seconds) as fixed-width UTC text, whole seconds: how the store keeps times."""
    return datetime.fromtimestamp(ts, UTC).strftime(_TIME_FORMAT)


def from_iso(text: str) -> float:
    """Epoch seconds of a time written by ``iso``."""
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC).timestamp()


def check_role(role: str) -> str:
    """``role`` when it is one of rbac's roles."""
    if role not in ROLE_NAMES:
        raise ValidationError(
            t("errors.admin.role_not_one", role=role, choices=', '.join(ROLE_NAMES)), {"field": "role"}
        )
    return role


def check_rate(rate: str | None) -> str | None:
    """A rate limit such as ``"100/minute"``, stripped; None means no limit of its own."""
    if rate is None:
        return None
    try:
        parse_rate(rate)
    except (ValueError, TypeError) as exc:
        raise ValidationError(t("errors.records.rate_limit", exc=exc), {"field": "rate_limit"}) from None
    return rate.strip()


def check_tenant_name(name: str) -> str:
    """``name`` when it is a tenant name: 1-64 letters, digits, '_', '.', '-', not starting with a sign."""
    if not isinstance(name, str) or not _TENANT_NAME.match(name):
        raise ValidationError(
            t("errors.records.name_not_tenant_name", name=name),
            {"field": "name"},
        )
    return name


def check_email(email: str) -> str:
    """The address stripped and lower-cased, as the store keys users by it."""
    if not isinstance(email, str) or not _EMAIL.match(email.strip()):
        raise ValidationError(t("errors.records.email_not_mail_address", email=email), {"field": "email"})
    return email.strip().lower()


def check_password(password: str) -> str:
    """``password`` when it has at least 8 characters."""
    if not isinstance(password, str) or len(password) < 8:
        raise ValidationError(t("errors.records.password_least_characters"), {"field": "password"})
    return password


# -- records --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tenant:
    """A customer: its users and keys, its plan (prices and limits) and whether it may call."""

    id: str
    name: str
    plan: str
    status: str
    timezone: str
    credits_enabled: bool
    created_at: str

    @property
    def active(self) -> bool:
        """False while suspended: its credentials then get PERMISSION_DENIED."""
        return self.status == "active"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form the admin API answers with."""
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
        """``user:<id>``: who this person is in the audit log, billing and ``created_by``."""
        return f"user:{self.id}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form the admin API answers with."""
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
        """``key:<prefix>``: who this key is in the audit log, billing and ``created_by``."""
        return f"key:{self.prefix}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form the admin API answers with (``scopes`` a list)."""
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
    """What a login checks: the user, its tenant and the argon2id hash to verify against."""

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
    #: how many alike failures this row stands for (failed authentications are tallied per minute)
    count: int = 1
