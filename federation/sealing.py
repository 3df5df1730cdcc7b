"""Sealed messages: what a hub signs with its node key, and the checks that open one.

Every advert, hello, forwarded call and on-behalf-of assertion travels sealed::

    msgpack {"k": kind, "b": msgpack(body), "n": sender public key, "t": sent at (float),
             "r": 16 random bytes, "s": Ed25519 signature}

The signature covers a domain prefix and the msgpack array ``[k, b, n, t, r]``: the kind is
signed, so an advert can never be replayed as a call, and the body is signed as the very bytes
that were sent, so nothing is re-encoded before it is checked.

``open_sealed`` refuses, with a ``SealError`` whose ``reason`` is a metric label: anything over
the size bound or not of this shape (``too_large``, ``malformed``); a sender other than the one
expected (``wrong_sender``); a signature that does not hold (``bad_signature``); a timestamp more
than ``MAX_SKEW_S`` away from ``now`` (``stale``, ``future``); a (sender, nonce) seen before
(``replay``).  The replay check comes after the signature, so no one can fill the guard with
nonces of messages they could not sign.

``ReplayGuard`` is sans-IO: it remembers each accepted (sender, nonce) until its timestamp has
left the window, so its memory is bounded by the traffic of one window and by ``max_entries``.
"""

from __future__ import annotations

import heapq
import math
import os
from dataclasses import dataclass
from typing import Any

import msgpack

from federation.identity import KEY_BYTES, SIGNATURE_BYTES, NodeIdentity, verify

#: how far a sealed message's timestamp may be from the receiver's clock, either way
MAX_SKEW_S = 30.0
#: the largest sealed message ``open_sealed`` reads by default (a frame's limit)
MAX_SEALED_BYTES = 8 << 20
NONCE_BYTES = 16
MAX_KIND = 64
#: nested maps and arrays a body may have: a call's JSON payload (64 levels at the doors) and its envelope
MAX_BODY_DEPTH = 128

_DOMAIN = b"democratic-ai sealed v1\x00"
_FIELDS = frozenset(("k", "b", "n", "t", "r", "s"))


class SealError(Exception):
    """A sealed message refused; ``reason`` is one of ``malformed``, ``too_large``, ``wrong_sender``,
    ``bad_signature``, ``stale``, ``future``, ``replay``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"sealed message refused: {reason}" + (f" ({detail})" if detail else ""))
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Opened:
    """A sealed message whose signature, sender, freshness and nonce all held."""

    kind: str
    body: dict[str, Any]
    sender: bytes
    sent_at: float
    nonce: bytes


def _signed_bytes(kind: str, body: bytes, sender: bytes, sent_at: float, nonce: bytes) -> bytes:
    return _DOMAIN + msgpack.packb([kind, body, sender, sent_at, nonce], use_bin_type=True)


def seal(identity: NodeIdentity, kind: str, body: dict[str, Any], now: float) -> bytes:
    """``body`` as ``kind``, signed by ``identity`` at ``now`` with a fresh random nonce."""
    packed = msgpack.packb(body, use_bin_type=True)
    sender, sent_at, nonce = identity.public_key, float(now), os.urandom(NONCE_BYTES)
    signature = identity.sign(_signed_bytes(kind, packed, sender, sent_at, nonce))
    return msgpack.packb({"k": kind, "b": packed, "n": sender, "t": sent_at, "r": nonce, "s": signature},
                         use_bin_type=True)


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not accepted")


def _unpack(data: bytes, limit: int, *, map_len: int, array_len: int) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True,
                               max_str_len=limit, max_bin_len=limit, max_array_len=array_len,
                               max_map_len=map_len, max_ext_len=0, ext_hook=_no_ext)
    except (ValueError, RecursionError, msgpack.UnpackException) as exc:
        raise SealError("malformed", f"not msgpack: {type(exc).__name__}") from None


def _depth_within(value: Any, limit: int) -> bool:
    """Whether ``value`` nests maps and arrays at most ``limit`` deep (iteratively: a deep one cannot recurse here)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


def open_sealed(data: bytes, *, now: float, guard: ReplayGuard, expect_sender: bytes | None = None,
                max_bytes: int = MAX_SEALED_BYTES) -> Opened:
    """Check and open a sealed message received at ``now``; SealError (with its reason) if it does not hold."""
    if not isinstance(data, bytes):
        raise SealError("malformed", "a sealed message is bytes")
    if len(data) > max_bytes:
        raise SealError("too_large", f"{len(data)} bytes, over {max_bytes}")
    outer = _unpack(data, max_bytes, map_len=len(_FIELDS), array_len=0)
    if not isinstance(outer, dict) or set(outer) != _FIELDS:
        raise SealError("malformed", "not a sealed message's map")
    kind, body, sender, sent_at, nonce, signature = (outer[name] for name in ("k", "b", "n", "t", "r", "s"))
    if not isinstance(kind, str) or not 0 < len(kind) <= MAX_KIND:
        raise SealError("malformed", "its kind is not a short text")
    if not (isinstance(body, bytes) and isinstance(sender, bytes) and len(sender) == KEY_BYTES
            and isinstance(nonce, bytes) and len(nonce) == NONCE_BYTES
            and isinstance(signature, bytes) and len(signature) == SIGNATURE_BYTES):
        raise SealError("malformed", "a field has the wrong type or length")
    # a float only: the signer signed a float, and re-encoding an int would give other bytes
    if not isinstance(sent_at, float) or not math.isfinite(sent_at):
        raise SealError("malformed", "its timestamp is not a finite float")
    if expect_sender is not None and sender != expect_sender:
        raise SealError("wrong_sender")
    if not verify(sender, _signed_bytes(kind, body, sender, sent_at, nonce), signature):
        raise SealError("bad_signature")
    decoded = _unpack(body, len(body), map_len=max(len(body), 1), array_len=max(len(body), 1))
    if not isinstance(decoded, dict):
        raise SealError("malformed", "its body is not a map")
    if not _depth_within(decoded, MAX_BODY_DEPTH):
        raise SealError("malformed", f"its body nests deeper than {MAX_BODY_DEPTH} levels")
    guard.check(sender, nonce, sent_at, now)
    return Opened(kind=kind, body=decoded, sender=sender, sent_at=sent_at, nonce=nonce)


class ReplayGuard:
    """Refuses a (sender, nonce) seen before, and any timestamp outside the window around ``now``.

    Each accepted nonce is remembered until ``sent_at + window_s``: after that the same message
    is refused as stale anyway, so it can be forgotten.  The memory is bounded by
    ``max_entries``.  A flood that fills it must not make an old nonce acceptable again, so the
    guard never simply drops one: it evicts the nonce that would have expired first and raises a
    floor, refusing every message sent at or before that nonce's timestamp.  Under a flood the
    accepted window shrinks (honest late messages may be refused as stale, and are retried);
    a replay is never let through.  Senders have signed every message that gets here, so a
    flood comes from a trusted peer, not from anyone on the network.
    """

    def __init__(self, window_s: float = MAX_SKEW_S, max_entries: int = 200_000) -> None:
        if window_s <= 0 or max_entries <= 0:
            raise ValueError("window_s and max_entries must be positive")
        self.window_s = window_s
        self.max_entries = max_entries
        self._seen: dict[bytes, float] = {}  # sender + nonce -> sent_at
        self._expiry: list[tuple[float, bytes]] = []  # (sent_at, key): a heap, oldest first
        #: the newest timestamp of a nonce forgotten (expired or evicted): messages sent at or before it are refused
        self._floor = -math.inf

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, sender: bytes, nonce: bytes, sent_at: float, now: float) -> None:
        """Accept (and remember) a message's nonce, or SealError ``stale``, ``future`` or ``replay``."""
        if sent_at > now + self.window_s:
            raise SealError("future", f"sent {sent_at - now:.1f} s ahead of this hub's clock")
        if sent_at < now - self.window_s:
            raise SealError("stale", f"sent {now - sent_at:.1f} s ago")
        self._forget_before(now - self.window_s)
        key = sender + nonce
        if key in self._seen:
            raise SealError("replay")
        if sent_at <= self._floor:
            raise SealError("stale", "the replay guard is full: its window has shrunk")
        if len(self._seen) >= self.max_entries:
            oldest_sent, _ = self._expiry[0]
            if sent_at <= oldest_sent:
                # older than all it remembers: taking it would mean forgetting a newer one
                raise SealError("stale", "the replay guard is full: its window has shrunk")
            oldest_sent, oldest = heapq.heappop(self._expiry)
            del self._seen[oldest]
            self._floor = max(self._floor, oldest_sent)
        self._seen[key] = sent_at
        heapq.heappush(self._expiry, (sent_at, key))

    def _forget_before(self, horizon: float) -> None:
        """Drop nonces sent before ``horizon``: a message that old is refused as stale before its nonce is looked up."""
        while self._expiry and self._expiry[0][0] < horizon:
            sent, key = heapq.heappop(self._expiry)
            del self._seen[key]
            # were this hub's clock to step back, a forgotten nonce would be inside the window
            # again: the floor keeps it refused
            self._floor = max(self._floor, sent)
