"""What an unauthenticated caller may cost, sans-IO: a per-IP limiter and the failure tally.

Nothing here reads a clock: each method takes ``now`` (seconds) and returns a decision.

- ``IpLimiter`` — a token bucket per client address in front of the work a caller can cause
  before it is known: a SQLite lookup for a credential not in the cache, an argon2id hash for
  a login.  IPv6 addresses count per /64 (one host usually holds a whole /64).  Bounded: at
  most ``max_ips`` buckets, least recently used first; a bucket that has refilled is the
  same as none, so idle ones are dropped first (``prune``).
- ``FailureTally`` — failed authentications counted per (minute, ip, action, reason, tenant)
  and handed out as one audit row each, with its count, once the minute is over: a flood
  of bad credentials writes a few rows a minute, not one a request.  Bounded at
  ``max_keys``: when full, everything counted so far is handed out early.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from dataclasses import dataclass

from daemon.tenancy.records import AuditEvent

#: the actor of a tallied row whose failures named more than one actor
SEVERAL_ACTORS = "several"


def client_key(ip: str) -> str:
    """The bucket an address counts in: IPv4 as is, IPv6 by its /64, v4-mapped as IPv4."""
    if ":" not in ip:
        return ip[:64]
    try:
        address = ipaddress.IPv6Address(ip.split("%", 1)[0])
    except ValueError:
        return ip[:64]
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return f"{ipaddress.IPv6Address(int(address) >> 64 << 64)}/64"


class IpLimiter:
    """``limit`` requests per ``window_s`` per client address, refilled continuously."""

    __slots__ = ("_buckets", "_max_ips", "limit", "rate")

    def __init__(self, limit: int, window_s: float, *, max_ips: int = 10_000) -> None:
        if not (limit > 0 and window_s > 0 and math.isfinite(window_s) and max_ips > 0):
            raise ValueError(f"an IP limiter needs a positive limit, window and size, got {limit}/{window_s}s")
        self.limit = float(limit)
        self.rate = self.limit / window_s
        self._max_ips = max_ips
        # client key -> (tokens left, when counted); insertion order is least recently used first
        self._buckets: dict[str, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, ip: str, now: float) -> float:
        """0.0 when ``ip`` may go on (one token taken); else the seconds until it may."""
        key = client_key(ip)
        entry = self._buckets.pop(key, None)
        if entry is None:
            tokens = self.limit
            if len(self._buckets) >= self._max_ips:
                self.prune(now)
                if len(self._buckets) >= self._max_ips:
                    self._buckets.pop(next(iter(self._buckets)))  # the least recently used
        else:
            tokens = self._refilled(entry, now)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def prune(self, now: float) -> int:
        """Drop the buckets that have refilled, oldest first, up to the first that has not."""
        dropped = 0
        while self._buckets:
            key, entry = next(iter(self._buckets.items()))
            if self._refilled(entry, now) < self.limit:
                break
            del self._buckets[key]
            dropped += 1
        return dropped

    def _refilled(self, entry: tuple[float, float], now: float) -> float:
        tokens, at = entry
        return min(self.limit, tokens + max(0.0, now - at) * self.rate)  # a clock step back adds nothing


@dataclass(slots=True)
class _Count:
    first: AuditEvent
    count: int = 1
    several: bool = False


class FailureTally:
    """Alike failures of one minute, to be written as one audit row with their ``count``."""

    __slots__ = ("_counts", "_max_keys", "_window_s")

    def __init__(self, *, window_s: float = 60.0, max_keys: int = 4096) -> None:
        self._window_s = window_s
        self._max_keys = max_keys
        self._counts: dict[tuple[int, str, str, str, str | None], _Count] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def add(self, event: AuditEvent, now: float) -> list[AuditEvent]:
        """Count ``event``; returns rows to write now, which happens only when the tally is full."""
        key = (int(now // self._window_s), event.ip, event.action, event.error, event.tenant_id)
        seen = self._counts.get(key)
        if seen is not None:
            seen.count += 1
            seen.several = seen.several or seen.first.actor != event.actor
            return []
        full = self.drain() if len(self._counts) >= self._max_keys else []
        self._counts[key] = _Count(event)
        return full

    def due(self, now: float) -> list[AuditEvent]:
        """The rows of every minute that is over."""
        minute = int(now // self._window_s)
        over = [key for key in self._counts if key[0] < minute]
        return [self._row(self._counts.pop(key)) for key in over]

    def drain(self) -> list[AuditEvent]:
        """Every row counted so far, minute over or not (at shutdown, or when full)."""
        counts, self._counts = self._counts, {}
        return [self._row(count) for count in counts.values()]

    @staticmethod
    def _row(count: _Count) -> AuditEvent:
        actor = SEVERAL_ACTORS if count.several else count.first.actor
        return dataclasses.replace(count.first, actor=actor, count=count.count)
