"""The handshake era's sessions (``Mcp-Session-Id``): open, look up, end, evict.

The table is ordered by last use.  It never runs a timer: opening a session first ends
those idle ``idle_s`` seconds or more; then, when the caller's tenant already holds
``max_per_tenant``, that tenant's own least recently used session ends.  A full table
(``max_sessions``, none idle) refuses the new session UNAVAILABLE (503) instead of ending
another tenant's: one caller cannot evict everyone else's sessions.  A session is only
ever found by its owner: another subject's id reads as unknown.  Time comes from the
``clock`` passed in (monotonic seconds), so tests move it instead of sleeping.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from daemon.core.errors import Unavailable
from daemon.core.i18n import t


@dataclass(slots=True)
class Session:
    """One open session: its owner, negotiated version, and what runs under it."""

    id: str
    subject: str
    version: str
    last_seen: float  # the table's clock at the last request that used it
    tenant: str = ""
    initialized: bool = False
    listening: bool = False
    #: set when the session ends: its GET stream closes
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    #: tools/call requests in flight, by JSON-RPC id: notifications/cancelled cancels them
    calls: dict[str | int, asyncio.Task[Any]] = field(default_factory=dict)


class SessionTable:
    """Open sessions by id, least recently used first; at most ``max_sessions`` of them."""

    def __init__(self, *, max_sessions: int = 1024, max_per_tenant: int = 64, idle_s: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions = max_sessions
        self.max_per_tenant = max_per_tenant
        self.idle_s = idle_s
        self.clock = clock
        self._sessions: collections.OrderedDict[str, Session] = collections.OrderedDict()
        #: each tenant's session ids, least recently used first
        self._by_tenant: dict[str, collections.OrderedDict[str, None]] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def open(self, subject: str, version: str, *, tenant: str = "") -> Session:
        """A new session for ``subject`` of ``tenant``, after ending idle ones and the tenant's oldest at its cap.

        UNAVAILABLE (with ``retry_after``: when the oldest session goes idle) when the table is full.
        """
        now = self.clock()
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if now - oldest.last_seen < self.idle_s:
                break
            self.end(oldest.id)
        own = self._by_tenant.get(tenant)
        while own and len(own) >= self.max_per_tenant:
            self.end(next(iter(own)))
        if len(self._sessions) >= self.max_sessions:
            oldest = next(iter(self._sessions.values()))
            raise Unavailable(t("errors.sessions.hub_holds_mcp_sessions", max_sessions=self.max_sessions),
                              {"limit": self.max_sessions},
                              retry_after=max(1.0, self.idle_s - (now - oldest.last_seen)))
        session = Session(secrets.token_urlsafe(24), subject, version, now, tenant)
        self._sessions[session.id] = session
        self._by_tenant.setdefault(tenant, collections.OrderedDict())[session.id] = None
        return session

    def use(self, session_id: str, subject: str) -> Session | None:
        """``subject``'s session ``session_id``, marked used now; None when unknown or another's."""
        session = self._sessions.get(session_id)
        if session is None or session.subject != subject:
            return None
        session.last_seen = self.clock()
        self._sessions.move_to_end(session_id)
        self._by_tenant[session.tenant].move_to_end(session_id)
        return session

    def end(self, session_id: str) -> None:
        """Forget the session and close its stream; an unknown id is ignored."""
        session = self._sessions.pop(session_id, None)
        if session is not None:
            own = self._by_tenant[session.tenant]
            del own[session_id]
            if not own:
                del self._by_tenant[session.tenant]
            session.closed.set()

    def held_by(self, tenant: str) -> int:
        """How many sessions ``tenant`` holds now."""
        return len(self._by_tenant.get(tenant, ()))

    def close(self) -> None:
        """End every session (the hub is stopping)."""
        for session in self._sessions.values():
            session.closed.set()
        self._sessions.clear()
        self._by_tenant.clear()
