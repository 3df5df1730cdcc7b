"""The four rate-limit algorithms of the seed, sans-IO.

Each limiter is a small class that never reads a clock: every method takes
``now`` (seconds, any monotonic origin) and returns a frozen ``Decision``.
Tests drive them with a fake clock; the usage gate passes loop time.

A clock that goes backwards must not break them: each limiter remembers the
latest ``now`` it saw and treats an earlier one as that instant, so elapsed
time is never negative (no negative refill, no window rewinding).

| limiter         | meters                      | seed use     |
|-----------------|-----------------------------|--------------|
| SlidingWindow   | events in the last window   | api_calls    |
| TokenBucket     | a budget that refills       | compute time |
| LeakyBucket     | a level that drains         | bandwidth    |
| FixedWindow     | a count per aligned window  | storage      |

``at_rest`` says whether a limiter is back where a new one starts (then its owner may drop
it and make a fresh one later: nothing changes), ``peek`` answers without changing state,
``hit`` consumes only when allowed,
``charge`` consumes unconditionally (for costs known only after a call ran:
compute milliseconds, bytes out), which may push the limiter into debt so the
next calls wait it off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from daemon.core.fastinit import fast_init


@fast_init
@dataclass(frozen=True, slots=True)
class Decision:
    """The answer of a limiter for one request."""

    allowed: bool
    remaining: float  # what is left in the current window/bucket after this request
    limit: float  # the configured quota (count, ms, bytes)
    reset_s: float  # seconds until the quota is fully available again
    retry_after_s: float  # 0 when allowed; else seconds until this request could pass


class Limiter(Protocol):
    """What the usage gate needs from any of the four algorithms."""

    limit: float
    window_s: float

    def peek(self, now: float, cost: float = 1.0) -> Decision:
        """Would ``cost`` pass at ``now``?  Consumes nothing."""
        ...

    def hit(self, now: float, cost: float = 1.0) -> Decision:
        """``peek``, and consume ``cost`` only when it is allowed."""
        ...

    def charge(self, now: float, cost: float) -> None:
        """Consume ``cost`` whatever is left (a cost known after the call); may go into debt."""
        ...

    def at_rest(self, now: float) -> bool:
        """At ``now`` this limiter would decide as a new one does: it can be dropped.  Changes nothing."""
        ...


class _Clocked:
    """Clamps time so it never runs backwards for this limiter."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = -math.inf

    def _tick(self, now: float) -> float:
        if now > self._last:
            self._last = now
        return self._last


def _check(limit: float, window_s: float) -> None:
    if not (limit > 0 and window_s > 0 and math.isfinite(limit) and math.isfinite(window_s)):
        raise ValueError(f"a limiter needs a positive limit and window, got {limit}/{window_s}s")


class SlidingWindow(_Clocked):
    """At most ``limit`` events in any ``window_s``: the sliding-window counter.

    Two fixed windows, the previous one weighted by how much of it still
    overlaps the sliding window.  O(1) memory per key (a log of timestamps
    would hold ``limit`` floats per key), and at most a few percent more
    permissive than an exact log at a window edge.
    """

    __slots__ = ("_curr", "_prev", "_start", "limit", "window_s")

    def __init__(self, limit: float, window_s: float) -> None:
        super().__init__()
        _check(limit, window_s)
        self.limit, self.window_s = float(limit), float(window_s)
        self._start = 0.0  # start of the current fixed window
        self._curr = 0.0
        self._prev = 0.0

    def _roll(self, now: float) -> float:
        now = self._tick(now)
        start = math.floor(now / self.window_s) * self.window_s
        if start != self._start:
            # one window later the current becomes the previous; more than one: both empty
            self._prev = self._curr if start - self._start == self.window_s else 0.0
            self._curr = 0.0
            self._start = start
        return now

    def _used(self, now: float) -> float:
        overlap = 1.0 - (now - self._start) / self.window_s
        return self._prev * overlap + self._curr

    def peek(self, now: float, cost: float = 1.0) -> Decision:
        """Would ``cost`` more events fit in the window ending at ``now``?  Consumes nothing."""
        now = self._roll(now)
        used = self._used(now)
        allowed = used + cost <= self.limit
        remaining = max(0.0, self.limit - used - (cost if allowed else 0.0))
        into = now - self._start
        retry = 0.0
        if not allowed:
            excess = used + cost - self.limit
            if self._prev > 0 and excess <= self._prev * (1.0 - into / self.window_s):
                # the previous window's weight decays linearly; solve for when enough has gone
                retry = excess / self._prev * self.window_s
            else:
                # this window's own events must age out: wait for the next window
                retry = self.window_s - into
                # at the boundary this window's count becomes the previous one, at full weight
                if self._curr + cost > self.limit and self._curr > 0:
                    retry += (self._curr + cost - self.limit) / self._curr * self.window_s
        # when the current fixed window ends and the oldest counted events start to weigh less
        return Decision(allowed, remaining, self.limit, self.window_s - into, retry)

    def hit(self, now: float, cost: float = 1.0) -> Decision:
        """Count ``cost`` events in the current window when they fit."""
        decision = self.peek(now, cost)
        if decision.allowed:
            self._curr += cost
        return decision

    def charge(self, now: float, cost: float) -> None:
        """Count ``cost`` events in the current window even past the limit."""
        self._roll(now)
        self._curr += cost

    def at_rest(self, now: float) -> bool:
        """Nothing counted, or both counted windows are over by ``now``."""
        return (self._curr == 0 and self._prev == 0) or max(now, self._last) >= self._start + 2 * self.window_s


class TokenBucket(_Clocked):
    """A bucket of ``limit`` tokens refilled at ``limit / window_s`` per second.

    Compute time is known only after a call: the gate admits while the bucket
    is not in debt (``peek`` with cost 0) and ``charge``s the measured
    milliseconds afterwards; a long call drives the bucket negative and the
    tenant waits until it refills.
    """

    __slots__ = ("_at", "_tokens", "limit", "rate", "window_s")

    def __init__(self, limit: float, window_s: float) -> None:
        super().__init__()
        _check(limit, window_s)
        self.limit, self.window_s = float(limit), float(window_s)
        self.rate = self.limit / self.window_s
        self._tokens = self.limit
        self._at: float | None = None

    def _refill(self, now: float) -> None:
        now = self._tick(now)
        if self._at is not None:
            self._tokens = min(self.limit, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def peek(self, now: float, cost: float = 1.0) -> Decision:
        """Are ``cost`` tokens in the bucket at ``now`` (cost 0: is it out of debt)?  Takes none."""
        self._refill(now)
        # cost 0 asks "is the bucket out of debt?"
        allowed = self._tokens >= cost
        left = self._tokens - (cost if allowed else 0.0)
        need = cost - self._tokens
        retry = 0.0 if allowed else need / self.rate
        reset = max(0.0, (self.limit - left) / self.rate)
        return Decision(allowed, max(0.0, left), self.limit, reset, retry)

    def hit(self, now: float, cost: float = 1.0) -> Decision:
        """Take ``cost`` tokens when the bucket holds them."""
        decision = self.peek(now, cost)
        if decision.allowed:
            self._tokens -= cost
        return decision

    def charge(self, now: float, cost: float) -> None:
        """Take ``cost`` tokens even into debt: the bucket must refill past 0 before the next call."""
        self._refill(now)
        self._tokens -= cost

    def at_rest(self, now: float) -> bool:
        """Full again by ``now`` (a debt included)."""
        if self._at is None:
            return True
        return self._tokens + (max(now, self._last) - self._at) * self.rate >= self.limit


class LeakyBucket(_Clocked):
    """A bucket of capacity ``limit`` that drains ``limit / window_s`` per second (as a meter).

    Each request pours its size in; it is refused when it would overflow.
    Bandwidth: bytes in are poured at admission, bytes out charged after.
    """

    __slots__ = ("_at", "_level", "leak", "limit", "window_s")

    def __init__(self, limit: float, window_s: float) -> None:
        super().__init__()
        _check(limit, window_s)
        self.limit, self.window_s = float(limit), float(window_s)
        self.leak = self.limit / self.window_s
        self._level = 0.0
        self._at: float | None = None

    def _drain(self, now: float) -> None:
        now = self._tick(now)
        if self._at is not None:
            self._level = max(0.0, self._level - (now - self._at) * self.leak)
        self._at = now

    def peek(self, now: float, cost: float = 1.0) -> Decision:
        """Would pouring ``cost`` overflow the bucket at ``now``?  Pours nothing."""
        self._drain(now)
        # a single request bigger than the bucket passes when the bucket is empty, or it never could
        allowed = self._level + cost <= self.limit or self._level == 0.0
        level = self._level + (cost if allowed else 0.0)
        retry = 0.0 if allowed else (self._level + min(cost, self.limit) - self.limit) / self.leak
        return Decision(allowed, max(0.0, self.limit - level), self.limit, level / self.leak, retry)

    def hit(self, now: float, cost: float = 1.0) -> Decision:
        """Pour ``cost`` in when it does not overflow."""
        decision = self.peek(now, cost)
        if decision.allowed:
            self._level += cost
        return decision

    def charge(self, now: float, cost: float) -> None:
        """Pour ``cost`` in even past capacity: later calls wait until it drains."""
        self._drain(now)
        self._level += cost

    def at_rest(self, now: float) -> bool:
        """Drained empty by ``now``."""
        if self._at is None:
            return True
        return self._level - (max(now, self._last) - self._at) * self.leak <= 0


class FixedWindow(_Clocked):
    """At most ``limit`` per window aligned to multiples of ``window_s`` (storage per hour/day)."""

    __slots__ = ("_count", "_start", "limit", "window_s")

    def __init__(self, limit: float, window_s: float) -> None:
        super().__init__()
        _check(limit, window_s)
        self.limit, self.window_s = float(limit), float(window_s)
        self._start = 0.0
        self._count = 0.0

    def _roll(self, now: float) -> float:
        now = self._tick(now)
        start = math.floor(now / self.window_s) * self.window_s
        if start != self._start:
            self._start, self._count = start, 0.0
        return now

    def peek(self, now: float, cost: float = 1.0) -> Decision:
        """Would ``cost`` fit in the aligned window holding ``now``?  Counts nothing."""
        now = self._roll(now)
        allowed = self._count + cost <= self.limit
        left = self.limit - self._count - (cost if allowed else 0.0)
        reset = self._start + self.window_s - now
        return Decision(allowed, max(0.0, left), self.limit, reset, 0.0 if allowed else reset)

    def hit(self, now: float, cost: float = 1.0) -> Decision:
        """Count ``cost`` in the current window when it fits."""
        decision = self.peek(now, cost)
        if decision.allowed:
            self._count += cost
        return decision

    def charge(self, now: float, cost: float) -> None:
        """Count ``cost`` in the current window even past the limit."""
        self._roll(now)
        self._count += cost

    def at_rest(self, now: float) -> bool:
        """Nothing counted, or the counted window is over by ``now``."""
        return self._count == 0 or max(now, self._last) >= self._start + self.window_s
