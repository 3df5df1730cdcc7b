"""CredentialCache: credentials verified once, by the sha256 of what the caller presented.

API keys and bearer tokens are kept apart, each bounded at ``size`` (the oldest entry goes
first).  An entry is good until the earlier of its credential's expiry and a maximum age
the authenticator sets.  Revocation: ``epoch`` moves on every drop, and a lookup that began
before a drop does not cache its (maybe stale) answer; see ``remember``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from daemon.core.envelope import Principal


@dataclass(frozen=True, slots=True)
class Cached:
    """A verified credential: its principal, until when, and (bearer tokens) its jti and family."""

    principal: Principal
    valid_until: float  # wall clock: min(credential expiry, verification time + max age)
    jti: str | None = None
    family: str | None = None


class CredentialCache:
    """Verified API keys and bearer tokens, ``size`` of each at most."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self.keys: dict[str, Cached] = {}  # sha256(api key) -> verified principal
        self.tokens: dict[str, Cached] = {}  # sha256(bearer token) -> verified principal
        #: bumped on every drop: a lookup started under an older epoch must not be cached
        self.epoch = 0

    @staticmethod
    def hit(cache: dict[str, Cached], digest: str, now: float) -> Cached | None:
        """The entry of ``digest`` in ``cache`` (``keys`` or ``tokens``) when still good at ``now``."""
        entry = cache.get(digest)
        return entry if entry is not None and entry.valid_until > now else None

    def remember(self, cache: dict[str, Cached], digest: str, entry: Cached, epoch: int) -> None:
        """Keep ``entry`` unless a drop happened since the lookup began (at ``epoch``)."""
        if epoch != self.epoch:
            return  # a revocation happened while we looked it up: do not cache a stale answer
        if len(cache) >= self._size:
            cache.pop(next(iter(cache)))  # the oldest entry; dicts keep insertion order
        cache[digest] = entry

    def drop_all(self) -> None:
        """Forget everything (another process changed the database)."""
        self.epoch += 1
        self.keys.clear()
        self.tokens.clear()

    def drop(self, cache: dict[str, Cached], which: Callable[[Cached], bool]) -> None:
        """Forget the entries of ``cache`` that ``which`` picks (a revocation in this process)."""
        self.epoch += 1
        for digest, entry in list(cache.items()):
            if which(entry):
                del cache[digest]
