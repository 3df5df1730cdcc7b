"""Sealed messages and the replay guard: forgeries, stale and future clocks and replays are refused.

The clock is whatever ``now`` the test passes: nothing here sleeps or reads the time.
"""

from __future__ import annotations

import os

import msgpack
import pytest

from federation.identity import NodeIdentity
from federation.sealing import MAX_SKEW_S, Opened, ReplayGuard, SealError, open_sealed, seal

NOW = 1_800_000_000.0


@pytest.fixture
def paris() -> NodeIdentity:
    return NodeIdentity.generate()


@pytest.fixture
def lyon() -> NodeIdentity:
    return NodeIdentity.generate()


def refusal(data: bytes, *, now: float = NOW, guard: ReplayGuard | None = None, expect: bytes | None = None,
            max_bytes: int = 8 << 20) -> str:
    with pytest.raises(SealError) as refused:
        open_sealed(data, now=now, guard=guard or ReplayGuard(), expect_sender=expect, max_bytes=max_bytes)
    return refused.value.reason


def reseal(data: bytes, **changes: object) -> bytes:
    """The same sealed map with some fields changed (and the signature left as it was)."""
    return msgpack.packb({**msgpack.unpackb(data), **changes}, use_bin_type=True)


def test_a_sealed_message_opens_to_what_was_sealed(paris: NodeIdentity) -> None:
    body = {"action": "echo", "payload": {"text": "hé", "n": [1, 2.5, None, True]}, "cert": b"\x00\x01"}
    opened = open_sealed(seal(paris, "call", body, NOW), now=NOW + 1, guard=ReplayGuard(),
                         expect_sender=paris.public_key)
    assert isinstance(opened, Opened)
    assert (opened.kind, opened.body, opened.sender, opened.sent_at) == ("call", body, paris.public_key, NOW)
    assert len(opened.nonce) == 16


def test_two_seals_of_the_same_body_differ_by_their_nonce(paris: NodeIdentity) -> None:
    guard = ReplayGuard()
    first = open_sealed(seal(paris, "advert", {"seq": 1}, NOW), now=NOW, guard=guard)
    second = open_sealed(seal(paris, "advert", {"seq": 1}, NOW), now=NOW, guard=guard)
    assert first.nonce != second.nonce and first.body == second.body


def test_a_tampered_body_kind_time_or_nonce_breaks_the_signature(paris: NodeIdentity) -> None:
    sealed = seal(paris, "advert", {"load": 0.1}, NOW)
    assert refusal(reseal(sealed, b=msgpack.packb({"load": 0.9}))) == "bad_signature"
    assert refusal(reseal(sealed, k="call")) == "bad_signature"  # an advert never passes for a call
    assert refusal(reseal(sealed, t=NOW + 1.0)) == "bad_signature"
    assert refusal(reseal(sealed, r=os.urandom(16))) == "bad_signature"  # a fresh nonce cannot be stuck on
    assert refusal(reseal(sealed, s=bytes(64))) == "bad_signature"


def test_a_message_from_another_sender_than_expected_is_refused(paris: NodeIdentity, lyon: NodeIdentity) -> None:
    sealed = seal(lyon, "advert", {}, NOW)
    assert refusal(sealed, expect=paris.public_key) == "wrong_sender"
    # lyon's body and signature under paris's key: the signature does not hold
    assert refusal(reseal(sealed, n=paris.public_key)) == "bad_signature"
    assert open_sealed(sealed, now=NOW, guard=ReplayGuard(), expect_sender=lyon.public_key).sender == lyon.public_key


def test_timestamps_beyond_the_skew_either_way_are_refused(paris: NodeIdentity) -> None:
    assert refusal(seal(paris, "advert", {}, NOW - MAX_SKEW_S - 1)) == "stale"
    assert refusal(seal(paris, "advert", {}, NOW + MAX_SKEW_S + 1)) == "future"
    guard = ReplayGuard()
    open_sealed(seal(paris, "advert", {}, NOW - MAX_SKEW_S), now=NOW, guard=guard)  # the bounds themselves pass
    open_sealed(seal(paris, "advert", {}, NOW + MAX_SKEW_S), now=NOW, guard=guard)


def test_a_replayed_message_is_refused_for_as_long_as_it_is_fresh_and_stale_after(paris: NodeIdentity) -> None:
    guard = ReplayGuard()
    sealed = seal(paris, "call", {"id": 1}, NOW)
    open_sealed(sealed, now=NOW, guard=guard)
    for later in (NOW, NOW + 1, NOW + MAX_SKEW_S):
        assert refusal(sealed, now=later, guard=guard) == "replay"
    assert refusal(sealed, now=NOW + MAX_SKEW_S + 1, guard=guard) == "stale"
    assert refusal(sealed, now=NOW + 3600, guard=guard) == "stale"


def test_the_guard_forgets_nonces_once_they_are_stale(paris: NodeIdentity) -> None:
    guard = ReplayGuard()
    for i in range(100):
        open_sealed(seal(paris, "advert", {"i": i}, NOW + i), now=NOW + i, guard=guard)
    assert len(guard) <= MAX_SKEW_S + 1  # only the last window's nonces are held


def test_a_clock_stepping_back_does_not_reopen_a_forgotten_nonce(paris: NodeIdentity) -> None:
    guard = ReplayGuard()
    sealed = seal(paris, "call", {}, NOW)
    open_sealed(sealed, now=NOW, guard=guard)
    open_sealed(seal(paris, "call", {}, NOW + 100), now=NOW + 100, guard=guard)  # forgets the first nonce
    assert refusal(sealed, now=NOW + 1, guard=guard) == "stale"  # the hub's clock stepped back 99 s


def test_a_flood_keeps_the_guard_bounded_and_never_lets_a_replay_through() -> None:
    guard = ReplayGuard(window_s=30.0, max_entries=1000)
    sender = bytes(32)
    first_nonce = os.urandom(16)
    guard.check(sender, first_nonce, NOW - 20, NOW)
    for i in range(5000):  # more fresh messages in one window than the guard may hold
        guard.check(sender, i.to_bytes(16, "big"), NOW - 19 + i / 1000, NOW)
    assert len(guard) <= 1000
    for nonce, sent_at in ((first_nonce, NOW - 20), ((0).to_bytes(16, "big"), NOW - 19)):
        with pytest.raises(SealError) as refused:
            guard.check(sender, nonce, sent_at, NOW)  # evicted under the flood, still refused
        assert refused.value.reason in ("stale", "replay")
    with pytest.raises(SealError, match="replay"):
        guard.check(sender, (4999).to_bytes(16, "big"), NOW - 19 + 4.999, NOW)
    guard.check(sender, os.urandom(16), NOW, NOW)  # a new message is still taken


def test_the_guard_refuses_stale_and_future_itself() -> None:
    guard = ReplayGuard(window_s=5.0)
    with pytest.raises(SealError, match="stale"):
        guard.check(bytes(32), bytes(16), NOW - 6, NOW)
    with pytest.raises(SealError, match="future"):
        guard.check(bytes(32), bytes(16), NOW + 6, NOW)
    assert len(guard) == 0
    with pytest.raises(ValueError):
        ReplayGuard(max_entries=0)


def test_the_same_nonce_from_two_senders_is_two_messages() -> None:
    guard = ReplayGuard()
    nonce = bytes(16)
    guard.check(b"a" * 32, nonce, NOW, NOW)
    guard.check(b"b" * 32, nonce, NOW, NOW)
    with pytest.raises(SealError, match="replay"):
        guard.check(b"a" * 32, nonce, NOW, NOW)


def test_bytes_that_are_not_a_sealed_message_are_refused_as_malformed(paris: NodeIdentity) -> None:
    sealed = seal(paris, "advert", {"x": 1}, NOW)
    fields = msgpack.unpackb(sealed)
    for bad in (b"", b"\xc1", os.urandom(64), msgpack.packb([1, 2]), msgpack.packb({"k": "advert"}),
                sealed + b"\x00", sealed[:-1],
                reseal(sealed, extra=1), reseal(sealed, t=int(NOW)), reseal(sealed, t=float("nan")),
                reseal(sealed, n=b"short"), reseal(sealed, r=b"short"), reseal(sealed, s=b"short"),
                reseal(sealed, k=""), reseal(sealed, k="x" * 100), reseal(sealed, b="text"),
                msgpack.packb({**fields, "k": 7})):
        assert refusal(bad) == "malformed", bad
    assert refusal("text") == "malformed"  # type: ignore[arg-type]


def test_a_signed_body_that_is_not_a_sane_map_is_refused(paris: NodeIdentity) -> None:
    def seal_raw(body: bytes) -> bytes:
        # a peer that signs whatever bytes it likes: only the body's own checks stand in the way
        from federation.sealing import _signed_bytes

        nonce = os.urandom(16)
        signature = paris.sign(_signed_bytes("advert", body, paris.public_key, NOW, nonce))
        return msgpack.packb({"k": "advert", "b": body, "n": paris.public_key, "t": NOW, "r": nonce,
                              "s": signature}, use_bin_type=True)

    deep: object = {}
    for _ in range(200):
        deep = {"d": deep}
    for body in (msgpack.packb([1, 2]), b"\xc1", msgpack.packb({"a": 1}) + b"junk", msgpack.packb(deep),
                 b"\x91" * 100_000, msgpack.packb({"x": msgpack.ExtType(5, b"")}),
                 msgpack.packb({"x": msgpack.ExtType(1, b"abc")}), msgpack.packb({1: "int key"})):
        assert refusal(seal_raw(body)) == "malformed"
    assert open_sealed(seal_raw(msgpack.packb({"ok": True})), now=NOW, guard=ReplayGuard()).body == {"ok": True}


def test_an_oversized_message_is_refused_before_it_is_read(paris: NodeIdentity) -> None:
    sealed = seal(paris, "call", {"payload": "x" * 10_000}, NOW)
    assert refusal(sealed, max_bytes=1024) == "too_large"
    assert refusal(b"\x00" * (9 << 20)) == "too_large"
    assert open_sealed(sealed, now=NOW, guard=ReplayGuard()).body["payload"] == "x" * 10_000


def test_random_corruption_is_always_a_clean_refusal(paris: NodeIdentity) -> None:
    import random

    rng = random.Random(10)
    sealed = seal(paris, "advert", {"caps": [{"a": "echo", "s": True}] * 3}, NOW)
    for _ in range(3000):
        data = bytearray(sealed)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.2:
            data = data[:rng.randrange(len(data))]
        try:
            opened = open_sealed(bytes(data), now=NOW, guard=ReplayGuard())
        except SealError as exc:
            assert exc.reason in ("malformed", "bad_signature", "stale", "future", "too_large")
        else:  # a change that still opens must have changed nothing that was signed
            assert (opened.kind, opened.body) == ("advert", {"caps": [{"a": "echo", "s": True}] * 3})
