"""JWTs, sans-IO: issue an access/refresh pair and verify one, given the secret and ``now``.

HS256 only: the algorithm is fixed here, never taken from a token's header.  Expiry is
checked against the caller's clock (``now``), not pyjwt's, so tests drive time.  A token
that does not verify raises ``TokenRejected`` with a reason fit for the audit log; the
caller decides what to record and raise.  Whether a token was revoked, or its user and
tenant are still active, needs the database: that is authn.py's job.

Every pair carries a family id (``fam``): a login starts a family, each refresh passes it
on.  When a refresh token is used a second time, someone holds a copy: the authenticator
then revokes the whole family (the OAuth 2.0 Security BCP's refresh token reuse detection).
"""

from __future__ import annotations

import uuid
from typing import Any

import jwt

from daemon.tenancy.rbac import ROLE_NAMES

ALGORITHM = "HS256"
_REQUIRED_CLAIMS = ["exp", "iat", "jti", "sub"]


class TokenRejected(Exception):
    """A token that does not verify.  ``claims`` are what it says about its bearer when the
    signature held (so the audit log can name them), else None."""

    def __init__(self, reason: str, claims: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.claims = claims


def new_family() -> str:
    """A fresh family id, for a login."""
    return uuid.uuid4().hex


def family_of(claims: dict[str, Any]) -> str | None:
    """The family id a token's claims carry; None for a token made before families existed."""
    family = claims.get("fam")
    return family if isinstance(family, str) and family else None


def issue_pair(
    secret: bytes, user_id: str, tenant_id: str, role: str, *, now: float, access_ttl_s: int, refresh_ttl_s: int,
    family: str,
) -> dict[str, Any]:
    """``{access_token, refresh_token, token_type, expires_in}``, each token with a fresh jti, both in ``family``."""
    issued_at = int(now)
    pair: dict[str, Any] = {}
    for typ, ttl in (("access", access_ttl_s), ("refresh", refresh_ttl_s)):
        claims = {"sub": user_id, "tenant_id": tenant_id, "role": role, "typ": typ,
                  "iat": issued_at, "exp": issued_at + ttl, "jti": uuid.uuid4().hex, "fam": family}
        pair[f"{typ}_token"] = jwt.encode(claims, secret, algorithm=ALGORITHM)
    pair["token_type"] = "Bearer"
    pair["expires_in"] = access_ttl_s
    return pair


def verify(token: str, secret: bytes, typ: str, *, now: float) -> dict[str, Any]:
    """The claims of ``token`` once signature, algorithm, required claims, expiry, type
    (``access`` or ``refresh``), role and tenant all check out; else TokenRejected."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            # expiry is checked below against the caller's clock; require the claims we rely on
            options={"require": _REQUIRED_CLAIMS, "verify_exp": False, "verify_iat": False},
        )
    except jwt.InvalidAlgorithmError:
        raise TokenRejected("token algorithm not accepted") from None
    except jwt.InvalidSignatureError:
        raise TokenRejected("token signature is invalid") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRejected(f"token lacks the {exc.claim!r} claim") from None
    except jwt.PyJWTError:
        raise TokenRejected("malformed token") from None
    try:
        expired = float(claims["exp"]) <= now
    except (TypeError, ValueError):
        expired = True
    if expired:
        raise TokenRejected("token expired", claims)
    if claims.get("typ") != typ:
        raise TokenRejected(f"a {claims.get('typ')!r} token cannot be used here; {typ} needed", claims)
    if claims.get("role") not in ROLE_NAMES or not str(claims.get("tenant_id") or ""):
        raise TokenRejected("token lacks tenant or role", claims)
    return claims


def revocation_target(token: str, secret: bytes) -> tuple[str, float]:
    """``(jti, exp)`` of a whole JWT to revoke: the signature must hold, expiry does not matter."""
    if not isinstance(token, str) or token.count(".") != 2 or len(token) > 4096:
        raise TokenRejected("token to revoke is not a JWT this hub issued")
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM],
                            options={"require": ["jti", "exp"], "verify_exp": False, "verify_iat": False})
        return str(claims["jti"]), float(claims["exp"])
    except (jwt.PyJWTError, TypeError, ValueError):
        raise TokenRejected("token to revoke is not a JWT this hub issued") from None
