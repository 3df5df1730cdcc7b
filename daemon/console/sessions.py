"""Console sessions: an opaque cookie standing for the credential its holder signed in with.

Sans-IO: every method takes ``now`` (wall-clock seconds), nothing here waits or reads a file.
The store keeps the credential itself, not a verdict on it: each request made with the cookie
is authenticated again through the pipeline, so a key revoked, a user removed or a token
revoked ends the session at its next request.  It is bounded twice: one principal (a key, a
person) holds at most ``per_principal`` sessions (its own oldest goes to make room), and when
``max_sessions`` live sessions fill the store a new one is refused (UNAVAILABLE) rather than
pushing out someone else's.  Every session lives ``ttl_s`` at most.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from daemon.core.envelope import Credentials
from daemon.core.errors import Unavailable
from daemon.core.i18n import t

COOKIE = "da_console"
TTL_S = 8 * 3600
MAX_SESSIONS = 1024
#: sessions one key or person may hold at once; an older one of theirs ends for a new one
PER_PRINCIPAL = 8
#: what ``secrets.token_urlsafe(32)`` makes: anything else in the cookie is not ours
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
#: a signed-in person's access token is renewed this long before it would expire
REFRESH_MARGIN_S = 60.0
#: methods that change nothing: a cookie alone may make them, without the CSRF header
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Session:
    """One signed-in console: who, with what credential, until when (wall-clock seconds)."""

    token: str
    csrf_token: str
    credentials: Credentials
    role: str
    tenant_id: str
    user_id: str | None
    expires_at: float
    #: a person's session renews its access token with this (None for an API key session)
    refresh_token: str | None = None
    access_expires_at: float | None = None

    @property
    def principal(self) -> str:
        """Whose session this is: the person (tenant and user) or the API key it signed in with."""
        return f"user:{self.tenant_id}:{self.user_id}" if self.user_id else f"key:{self.credentials.api_key}"

    def needs_refresh(self, now: float) -> bool:
        """True when the access token is about to expire and a refresh token can renew it."""
        return (self.refresh_token is not None and self.access_expires_at is not None
                and now >= self.access_expires_at - REFRESH_MARGIN_S)

    def csrf_ok(self, presented: str) -> bool:
        """The X-CSRF-Token header matches (compared in constant time)."""
        return bool(presented) and hmac.compare_digest(presented.encode(), self.csrf_token.encode())


class SessionStore:
    """Sessions by cookie token: bounded per principal and in all, each expiring ``ttl_s`` after sign-in."""

    def __init__(self, *, ttl_s: float = TTL_S, max_sessions: int = MAX_SESSIONS,
                 per_principal: int = PER_PRINCIPAL) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.per_principal = per_principal
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, credentials: Credentials, *, role: str, tenant_id: str, user_id: str | None, now: float,
               refresh_token: str | None = None, access_expires_at: float | None = None) -> Session:
        """A new session with fresh random cookie and CSRF tokens.

        The principal's own oldest session ends when it already holds ``per_principal``;
        UNAVAILABLE (503) when ``max_sessions`` others fill the store: nobody else's is evicted.
        """
        session = Session(token=secrets.token_urlsafe(32), csrf_token=secrets.token_urlsafe(32),
                          credentials=credentials, role=role, tenant_id=tenant_id, user_id=user_id,
                          expires_at=now + self.ttl_s, refresh_token=refresh_token,
                          access_expires_at=access_expires_at)
        self._purge(now)
        own = [token for token, held in self._sessions.items() if held.principal == session.principal]
        for token in own[:max(len(own) - self.per_principal + 1, 0)]:  # oldest first: insertion order
            del self._sessions[token]
        if len(self._sessions) >= self.max_sessions:
            raise Unavailable(t("errors.console.too_many_sessions", limit=self.max_sessions),
                              {"max_sessions": self.max_sessions}, retry_after=60.0)
        self._sessions[session.token] = session
        return session

    def get(self, token: str, now: float) -> Session | None:
        """The live session of ``token``; an expired one is dropped and None returned."""
        session = self._sessions.get(token)
        if session is None:
            return None
        if now >= session.expires_at:
            del self._sessions[token]
            return None
        return session

    def replace(self, session: Session) -> None:
        """Store ``session`` (its renewed credential) in place of the one with its token, if that still lives."""
        if session.token in self._sessions:
            self._sessions[session.token] = session

    def drop(self, token: str) -> Session | None:
        """End a session (signed out, or its credential no longer holds); returns it when there was one."""
        return self._sessions.pop(token, None)

    def _purge(self, now: float) -> None:
        # insertion order is expiry order (every session lives ttl_s): expired ones are at the front
        while self._sessions:
            token, oldest = next(iter(self._sessions.items()))
            if now < oldest.expires_at:
                return
            del self._sessions[token]


def cookie_token(cookie_header: str) -> str:
    """The ``da_console`` value of a Cookie header; "" when absent or not the shape of our tokens.

    Split by hand, in linear time: ``http.cookies`` has a quadratic case (CVE-2024-7592) and this
    runs on the loop before the caller is known.
    """
    if COOKIE not in cookie_header:
        return ""
    for pair in cookie_header.split(";"):
        name, _, value = pair.partition("=")
        value = value.strip()
        if name.strip() == COOKIE and TOKEN_SHAPE.fullmatch(value):
            return value
    return ""


def set_cookie(token: str, *, secure: bool, max_age: int = TTL_S) -> str:
    """The Set-Cookie value: HttpOnly (no script reads it), SameSite=Strict (no other site sends it)."""
    value = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}"
    return value + "; Secure" if secure else value


def expired_cookie(*, secure: bool) -> str:
    """A Set-Cookie that makes the browser forget the session's cookie."""
    return set_cookie("", secure=secure, max_age=0)


def same_origin(origin: str, fetch_site: str, host: str, secure: bool, *, required: bool) -> bool:
    """Whether the browser says the hub's own page made the request (``Sec-Fetch-Site``, else ``Origin``).

    ``required``: a request that says neither is refused (a WebSocket, which no CORS rule guards:
    the cookie reaches it from a page on another port or subdomain); otherwise it passes (a
    client that is no browser).
    """
    if fetch_site == "same-origin":
        return True
    if origin:
        return origin == f"{'https' if secure else 'http'}://{host}"
    return not fetch_site and not required
