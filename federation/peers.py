"""The peer table (sans-IO): which fleet peers this hub knows, what they serve, which to call.

Every method takes ``now`` (the hub's monotonic clock, in seconds) and returns a decision; nothing
here sleeps, reads a socket or looks at a clock, so tests drive it with plain numbers.

- **Membership.**  ``seen`` adds a trusted peer once its link is up (after the hello); ``lost``
  records the link dropping; ``forget`` drops everything about a peer.  The table holds at most
  ``max_peers``: a new peer past the bound evicts the peer whose link has been down longest, and is
  refused (``seen`` returns False) when every peer held has its link up — a live link is never
  dropped to make room.
- **Adverts.**  ``apply_advert`` keeps a peer's newest advert; one whose ``seq`` is not above the held
  one (a replay, or adverts arriving out of order) is ignored.  An advert older than
  ``advert_interval_s * expire_intervals`` is dead: its routes vanish from ``candidates`` and
  ``actions`` at that age whether or not ``expire`` ran, and ``expire`` frees it and reports whose
  routes went.  A peer whose link dropped keeps its advert until then, so a short outage does not
  empty ``/v1/capabilities``; it is not a candidate while its link is down.
- **Choice.**  ``candidates`` orders the peers that can take an action now by rtt x (load + 0.05),
  unknown rtt counting as 50 ms; scores within 10 % of the best are ties and rotate round robin,
  one step per call and per action.  ``failed`` marks a peer down for 1, 2, 4 ... 60 s; when that
  passes it is a candidate again (half-open): one more failure doubles the wait, ``succeeded``
  clears it.
- **Redial.**  After ``lost``, ``to_redial`` hands back the peer's addresses at 1, 2, 4 ... 30 s (plus
  up to 20 % jitter from the table's ``random.Random``, so a fleet that lost a hub does not redial it
  in step); ``seen`` or ``connected`` stops that.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from federation.adverts import Advert, AdvertisedCapability

#: a peer whose rtt is not measured yet counts as this far away
UNKNOWN_RTT_S = 0.05
#: added to load so an idle peer's score still grows with distance
LOAD_FLOOR = 0.05
#: scores within this factor of the best are ties (rotated round robin)
TIE_FACTOR = 1.10
RTT_ALPHA = 0.3
FAIL_BACKOFF_MAX_S = 60.0
REDIAL_BACKOFF_MAX_S = 30.0
REDIAL_JITTER = 0.2


class PeerState(enum.Enum):
    """Whether a peer can take calls now; the value is what ``peers`` and GET /v1/peers show."""

    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class PeerView:
    """One peer as ``democratic-ai peers`` and GET /v1/peers show it."""

    node_id: str
    site: str
    addrs: tuple[str, ...]
    state: str  # PeerState value: "up" | "down"
    rtt_ms: float | None  # None until measured
    advert_age_s: float | None  # None while no live advert is held
    load: float | None
    free_slots: int | None
    capabilities: list[str]  # sorted action names of the live advert
    down_until: float | None  # the table's clock: when a peer marked down by failed() is tried again
    retry_in_s: float | None = None  # down_until - now, for people

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``down_until`` left out: it is on the hub's monotonic clock)."""
        return {
            "node_id": self.node_id,
            "site": self.site,
            "addrs": list(self.addrs),
            "state": self.state,
            "rtt_ms": self.rtt_ms,
            "advert_age_s": self.advert_age_s,
            "load": self.load,
            "free_slots": self.free_slots,
            "capabilities": list(self.capabilities),
            "retry_in_s": self.retry_in_s,
        }


@dataclass(slots=True)
class _Peer:
    """What the table holds about one peer (mutable: the table's own bookkeeping)."""

    node_id: str
    site: str
    addrs: tuple[str, ...]
    linked: bool = True
    lost_at: float | None = None
    advert: Advert | None = None
    advert_at: float = 0.0
    seq: int = -1  # the highest seq applied; kept after the advert expires, so a replay stays refused
    rtt_s: float | None = None
    failures: int = 0
    down_until: float = -math.inf
    redial_attempts: int = 0
    redial_at: float | None = None
    actions: frozenset[str] = field(default_factory=frozenset)


class PeerTable:
    """Fleet peers, their adverts, liveness and the choice of peer for an action (sans-IO)."""

    def __init__(self, *, advert_interval_s: float = 10.0, expire_intervals: int = 3, max_peers: int = 256,
                 rng: random.Random | None = None) -> None:
        if advert_interval_s <= 0 or expire_intervals < 1 or max_peers < 1:
            raise ValueError("advert_interval_s, expire_intervals and max_peers must be positive")
        self.advert_interval_s = advert_interval_s
        self.expire_intervals = expire_intervals
        self.max_peers = max_peers
        self.advert_ttl_s = advert_interval_s * expire_intervals
        self._rng = rng if rng is not None else random.Random()
        self._peers: dict[str, _Peer] = {}
        self._turn: dict[str, int] = {}  # action -> round-robin counter, only for actions with tied peers

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._peers

    # -- membership -----------------------------------------------------------------------------
    def seen(self, node_id: str, site: str, addrs: Collection[str], now: float) -> bool:
        """A trusted peer whose link is up (after its hello): added, or refreshed; False if refused.

        A fresh link is a fresh start: failure backoff and redial schedule are cleared; the advert,
        its seq and the rtt are kept.  Past ``max_peers`` the peer whose link has been down longest
        makes room; when every peer held has a live link, the newcomer is refused.
        """
        peer = self._peers.get(node_id)
        if peer is None:
            if len(self._peers) >= self.max_peers and not self._evict_one():
                return False
            peer = self._peers[node_id] = _Peer(node_id, site, tuple(addrs))
        peer.site = site
        if addrs:
            peer.addrs = tuple(addrs)
        self._link_up(peer)
        return True

    def connected(self, node_id: str, now: float) -> None:
        """The link to a known peer is up again: stop redialling it.  Unknown peers are ignored."""
        peer = self._peers.get(node_id)
        if peer is not None:
            self._link_up(peer)

    def lost(self, node_id: str, now: float) -> None:
        """The transport lost the link: the peer is down and redialled; its advert stays until it expires."""
        peer = self._peers.get(node_id)
        if peer is None or not peer.linked:
            return
        peer.linked = False
        peer.lost_at = now
        peer.redial_attempts = 0
        peer.redial_at = now + self._redial_delay(0, self._rng)

    def forget(self, node_id: str) -> None:
        """Drop everything about a peer (its advert, seq, rtt, backoff and redial schedule)."""
        self._peers.pop(node_id, None)

    def _link_up(self, peer: _Peer) -> None:
        peer.linked = True
        peer.lost_at = None
        peer.redial_attempts = 0
        peer.redial_at = None
        peer.failures = 0
        peer.down_until = -math.inf

    def _evict_one(self) -> bool:
        """Make room by dropping the peer whose link has been down longest; False when all links are up."""
        down = [p for p in self._peers.values() if not p.linked]
        if not down:
            return False
        # every peer without a link has lost_at set (it came in through seen, left through lost)
        victim = min(down, key=lambda p: (p.lost_at if p.lost_at is not None else -math.inf, p.advert_at, p.node_id))
        del self._peers[victim.node_id]
        return True

    # -- adverts --------------------------------------------------------------------------------
    def apply_advert(self, advert: Advert, now: float) -> bool:
        """Keep ``advert`` as its sender's newest; False (ignored) for an unknown sender or an old seq."""
        peer = self._peers.get(advert.node_id)
        if peer is None or advert.seq <= peer.seq:
            return False
        peer.advert = advert
        peer.advert_at = now
        peer.seq = advert.seq
        peer.actions = advert.actions()
        if advert.addrs:
            peer.addrs = advert.addrs
        return True

    def expire(self, now: float) -> list[str]:
        """Drop adverts older than the advert TTL; the node ids whose routes vanished, sorted."""
        gone = []
        for peer in self._peers.values():
            if peer.advert is not None and not self._live(peer, now):
                peer.advert = None
                peer.actions = frozenset()
                gone.append(peer.node_id)
        if gone:
            advertised = {a for p in self._peers.values() for a in p.actions}
            self._turn = {a: t for a, t in self._turn.items() if a in advertised}
        return sorted(gone)

    def _live(self, peer: _Peer, now: float) -> bool:
        return peer.advert is not None and now - peer.advert_at < self.advert_ttl_s

    # -- liveness -------------------------------------------------------------------------------
    def failed(self, node_id: str, now: float) -> None:
        """A call to the peer failed or timed out: down for 1, 2, 4 ... 60 s (doubling per failure in a row)."""
        peer = self._peers.get(node_id)
        if peer is None:
            return
        peer.failures += 1
        peer.down_until = now + min(FAIL_BACKOFF_MAX_S, 2.0 ** min(peer.failures - 1, 16))

    def succeeded(self, node_id: str, rtt_s: float, now: float) -> None:
        """A call to the peer succeeded in ``rtt_s`` (network time): clears its backoff, feeds the rtt."""
        peer = self._peers.get(node_id)
        if peer is None:
            return
        peer.failures = 0
        peer.down_until = -math.inf
        self.rtt(node_id, rtt_s, now)

    def rtt(self, node_id: str, rtt_s: float, now: float) -> None:
        """A round-trip sample (a ping or a call): EWMA with alpha 0.3; the first sample is taken as is."""
        peer = self._peers.get(node_id)
        if peer is None or not math.isfinite(rtt_s) or rtt_s < 0:
            return
        peer.rtt_s = rtt_s if peer.rtt_s is None else (1 - RTT_ALPHA) * peer.rtt_s + RTT_ALPHA * rtt_s

    # -- choice ---------------------------------------------------------------------------------
    def candidates(self, action: str, now: float, *, exclude: Collection[str] = ()) -> list[str]:
        """The peers to try for ``action``, best first; rotates the ties (one step per call).

        A candidate has a live advert with the action, its link up, is not marked down (or its
        down time has passed) and is not in ``exclude``.
        """
        ready = [p for p in self._peers.values()
                 if action in p.actions and self._available(p, now) and self._live(p, now)
                 and p.node_id not in exclude]
        if len(ready) <= 1:
            return [p.node_id for p in ready]
        scored = sorted((self._score(p), p.node_id) for p in ready)
        limit = scored[0][0] * TIE_FACTOR
        tied = sorted(node for score, node in scored if score <= limit)
        rest = [node for score, node in scored if score > limit]
        if len(tied) > 1:
            turn = self._turn.get(action, 0)
            self._turn[action] = turn + 1
            k = turn % len(tied)
            tied = tied[k:] + tied[:k]
        return tied + rest

    def capability(self, action: str, now: float) -> AdvertisedCapability | None:
        """The capability as the freshest live advert that has it describes it (schemas, streaming)."""
        best: _Peer | None = None
        for peer in self._peers.values():
            if action in peer.actions and self._live(peer, now) and (
                    best is None or (peer.advert_at, peer.node_id) > (best.advert_at, best.node_id)):
                best = peer
        if best is None or best.advert is None:
            return None
        return next((c for c in best.advert.capabilities if c.action == action), None)

    def actions(self, now: float) -> dict[str, list[str]]:
        """Action -> the peers with a live advert for it: those that can take calls first, by score.

        Peers down now (link lost, or backing off) are listed after, by node id: their adverts still
        count until they expire.  Never moves the round robin.
        """
        order = sorted(self._peers.values(), key=lambda p: (not self._available(p, now),
                                                            self._score(p) if self._available(p, now) else 0.0,
                                                            p.node_id))
        routes: dict[str, list[str]] = {}
        for peer in order:
            if self._live(peer, now):
                for action in peer.actions:
                    routes.setdefault(action, []).append(peer.node_id)
        return routes

    def _available(self, peer: _Peer, now: float) -> bool:
        return peer.linked and peer.down_until <= now

    @staticmethod
    def _score(peer: _Peer) -> float:
        rtt = peer.rtt_s if peer.rtt_s is not None else UNKNOWN_RTT_S
        load = peer.advert.load if peer.advert is not None else 0.0
        return rtt * (load + LOAD_FLOOR)

    # -- views and redial -----------------------------------------------------------------------
    def views(self, now: float) -> list[PeerView]:
        """Every peer held, for ``democratic-ai peers`` and GET /v1/peers, sorted by site then node id."""
        views = []
        for peer in sorted(self._peers.values(), key=lambda p: (p.site, p.node_id)):
            live = peer.advert if self._live(peer, now) else None
            down = peer.down_until > now
            views.append(PeerView(
                node_id=peer.node_id,
                site=peer.site,
                addrs=peer.addrs,
                state=(PeerState.UP if self._available(peer, now) else PeerState.DOWN).value,
                rtt_ms=peer.rtt_s * 1000 if peer.rtt_s is not None else None,
                advert_age_s=now - peer.advert_at if live is not None else None,
                load=live.load if live is not None else None,
                free_slots=live.free_slots if live is not None else None,
                capabilities=sorted(peer.actions) if live is not None else [],
                down_until=peer.down_until if down else None,
                retry_in_s=peer.down_until - now if down else None,
            ))
        return views

    def to_redial(self, now: float, rng: random.Random | None = None) -> list[tuple[str, tuple[str, ...]]]:
        """The peers whose link is down and whose redial time has come, with their addresses, by node id.

        Each one returned is scheduled again at once, 1, 2, 4 ... 30 s later plus up to 20 % jitter
        (from ``rng``, else the table's), so a failed dial needs no report; a dial that works is
        reported through ``seen`` or ``connected``, which stops the redials.
        """
        rng = rng if rng is not None else self._rng
        due = []
        for peer in sorted(self._peers.values(), key=lambda p: p.node_id):
            if peer.linked or peer.redial_at is None or peer.redial_at > now:
                continue
            peer.redial_attempts += 1
            peer.redial_at = now + self._redial_delay(peer.redial_attempts, rng)
            due.append((peer.node_id, peer.addrs))
        return due

    @staticmethod
    def _redial_delay(attempt: int, rng: random.Random) -> float:
        base = min(REDIAL_BACKOFF_MAX_S, 2.0 ** min(attempt, 16))
        return base * (1 + rng.uniform(0, REDIAL_JITTER))
