"""Console sessions: an opaque cookie standing for the credential its holder signed in with.

Sans-IO: every method takes ``now`` (wall-clock seconds), nothing here waits or reads a file.
The store keeps the credential itself, not a verdict on it: each request made with the cookie
is authenticated again through the pipeline, so a key revoked, a user removed or a token
revoked ends the session at its next request.  It is bounded (the oldest session goes when a
new one would pass ``max_sessions``) and every session lives ``ttl_s`` at most.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie

from daemon.core.envelope import Credentials

COOKIE = "da_console"
TTL_S = 8 * 3600
MAX_SESSIONS = 1024
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

    def needs_refresh(self, now: float) -> bool:
        """True when the access token is about to expire and a refresh token can renew it."""
        return (self.refresh_token is not None and self.access_expires_at is not None
                and now >= self.access_expires_at - REFRESH_MARGIN_S)

    def csrf_ok(self, presented: str) -> bool:
        """The X-CSRF-Token header matches (compared in constant time)."""
        return bool(presented) and hmac.compare_digest(presented.encode(), self.csrf_token.encode())


class SessionStore:
    """Sessions by cookie token: bounded, oldest evicted first, each expiring ``ttl_s`` after sign-in."""

    def __init__(self, *, ttl_s: float = TTL_S, max_sessions: int = MAX_SESSIONS) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, credentials: Credentials, *, role: str, tenant_id: str, user_id: str | None, now: float,
               refresh_token: str | None = None, access_expires_at: float | None = None) -> Session:
        """A new session with fresh random cookie and CSRF tokens; the oldest goes when the store is full."""
        session = Session(token=secrets.token_urlsafe(32), csrf_token=secrets.token_urlsafe(32),
                          credentials=credentials, role=role, tenant_id=tenant_id, user_id=user_id,
                          expires_at=now + self.ttl_s, refresh_token=refresh_token,
                          access_expires_at=access_expires_at)
        self._purge(now)
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
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
    """The ``da_console`` value of a Cookie header; "" when absent or unparsable."""
    if COOKIE not in cookie_header:
        return ""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return ""
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else ""


def set_cookie(token: str, *, secure: bool, max_age: int = TTL_S) -> str:
    """The Set-Cookie value: HttpOnly (no script reads it), SameSite=Strict (no other site sends it)."""
    value = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}"
    return value + "; Secure" if secure else value


def expired_cookie(*, secure: bool) -> str:
    """A Set-Cookie that makes the browser forget the session's cookie."""
    return set_cookie("", secure=secure, max_age=0)
