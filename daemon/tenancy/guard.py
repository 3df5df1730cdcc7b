"""AuthGuard: what the authenticator does before it knows the caller, and after it refused one.

- ``admit`` charges the caller's IP before any SQLite or argon2id work (throttle.IpLimiter):
  one limiter for credential checks, refreshes and revocations, a stricter one for logins.
  Over the limit: 429 RATE_LIMITED with Retry-After.
- ``fail`` records a failed authentication in the tally (throttle.FailureTally) and raises;
  ``tick`` hands the rows of each finished minute to the audit queue, ``drain`` all of them
  (shutdown, tests).  The caller never waits for the disk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

from daemon.core.errors import HubError, RateLimited, Unauthenticated
from daemon.core.i18n import t
from daemon.runtime.config import AuthConfig, parse_rate
from daemon.tenancy.records import AuditEvent
from daemon.tenancy.store import TenancyStore
from daemon.tenancy.throttle import FailureTally, IpLimiter

RATE_LIMITED_REASON = "too many attempts from this address"


class AuthGuard:
    """Per-IP limits in front of authentication and login, and the tally of failures."""

    def __init__(self, store: TenancyStore, config: AuthConfig, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock
        self._checks = IpLimiter(*parse_rate(config.ip_rate_limit))
        self._logins = IpLimiter(*parse_rate(config.login_rate_limit))
        self._tally = FailureTally()

    async def admit(self, action: str, ip: str, user_agent: str, *, login: bool = False) -> None:
        """Charge ``ip`` one check (or one login); RateLimited, tallied, when it has none left."""
        now = self._clock()
        retry_after = (self._logins if login else self._checks).take(ip, now)
        if retry_after > 0:
            await self.fail(AuditEvent(action, "anonymous", None, "", ip, user_agent, False, RATE_LIMITED_REASON),
                            RateLimited(t("errors.guard.too_many_attempts"),
                                        retry_after,
                                        details={"scope": "ip"}))

    async def count(self, event: AuditEvent) -> None:
        """Tally a refusal the caller can repeat at will (one audit row per kind per minute, with a count)."""
        for row in self._tally.add(event, self._clock()):  # only when the tally is full
            await self._store.audit(row)

    async def fail(self, event: AuditEvent, error: HubError | None = None) -> NoReturn:
        """Tally ``event`` (a failure) and raise ``error`` (default: Unauthenticated with its reason)."""
        await self.count(event)
        raise error if error is not None else Unauthenticated(t("errors.relayed", message=event.error))

    async def tick(self) -> None:
        """Audit the tallies of the minutes that are over and forget the IPs that went quiet."""
        now = self._clock()
        for row in self._tally.due(now):
            await self._store.audit(row)
        self._checks.prune(now)
        self._logins.prune(now)

    async def drain(self) -> None:
        """Audit every tally now, minute over or not."""
        for row in self._tally.drain():
            await self._store.audit(row)
