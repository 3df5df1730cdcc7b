"""The four limiters, driven by a fake clock (plain floats): no sleeping, no wall time."""

from __future__ import annotations

import pytest

from daemon.metering.ratelimit import FixedWindow, LeakyBucket, SlidingWindow, TokenBucket


def test_sliding_window_allows_limit_then_refuses_with_retry_after() -> None:
    lim = SlidingWindow(3, 60.0)
    decisions = [lim.hit(100.0) for _ in range(3)]
    assert all(d.allowed for d in decisions)
    assert [d.remaining for d in decisions] == [2, 1, 0]
    refused = lim.hit(100.0)
    assert not refused.allowed and refused.limit == 3
    # the window [60, 120) holds 3; they count until the next window's weight lets one through
    assert 0 < refused.retry_after_s <= 60 + 20
    assert lim.peek(100.0 + refused.retry_after_s + 1e-6).allowed


def test_sliding_window_weights_the_previous_window() -> None:
    lim = SlidingWindow(10, 10.0)
    for _ in range(10):
        assert lim.hit(5.0).allowed  # window [0, 10) full
    # at t=15 half of the previous window still overlaps: 10 * 0.5 = 5 used
    assert lim.peek(15.0).remaining == pytest.approx(4)
    allowed = sum(lim.hit(15.0).allowed for _ in range(10))
    assert allowed == 5
    # two windows later nothing is left of the past
    assert sum(lim.hit(30.0).allowed for _ in range(12)) == 10


def test_refused_hits_are_not_counted() -> None:
    lim = SlidingWindow(1, 1.0)
    assert lim.hit(0.0).allowed
    for _ in range(100):
        assert not lim.hit(0.5).allowed
    assert lim.hit(2.0).allowed  # the 100 refusals did not push the window forward


def test_token_bucket_refills_and_goes_into_debt() -> None:
    bucket = TokenBucket(1000, 1.0)  # 1000 ms of compute per second
    assert bucket.peek(0.0, 0).allowed
    bucket.charge(0.0, 3000)  # a 3 s call: 2000 ms in debt
    refused = bucket.peek(0.5, 0)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(1.5)
    assert bucket.peek(2.0 + 1e-6, 0).allowed
    assert bucket.hit(10.0, 1000).allowed and bucket.peek(10.0, 1).allowed is False  # capped at 1000


def test_leaky_bucket_drains_at_its_rate() -> None:
    bucket = LeakyBucket(1000, 10.0)  # 1000 bytes, drains 100 B/s
    assert bucket.hit(0.0, 800).allowed
    refused = bucket.hit(0.0, 300)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(1.0)
    assert bucket.hit(1.0, 300).allowed
    # one request bigger than the whole bucket still passes when the bucket is empty
    assert bucket.hit(100.0, 5000).allowed
    assert not bucket.hit(100.0, 1).allowed


def test_fixed_window_resets_on_the_boundary() -> None:
    win = FixedWindow(2, 3600.0)
    assert win.hit(3599.0).allowed and win.hit(3599.0).allowed
    refused = win.hit(3599.5)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(0.5)
    assert win.hit(3600.0).allowed


@pytest.mark.parametrize("cls", [SlidingWindow, TokenBucket, LeakyBucket, FixedWindow])
def test_clock_going_backwards_never_breaks_a_limiter(cls: type) -> None:
    lim = cls(5, 10.0)
    for _ in range(5):
        lim.hit(1000.0)
    refused = lim.hit(1000.0)
    assert not refused.allowed
    # the clock jumps back an hour: no negative refill, no rewound window, no crash
    back = lim.hit(-2600.0)
    assert not back.allowed
    assert back.retry_after_s >= 0 and back.reset_s >= 0 and back.remaining >= 0
    # time resumes from the latest instant seen
    assert lim.hit(1000.0 + 20.0).allowed


@pytest.mark.parametrize("cls", [SlidingWindow, TokenBucket, LeakyBucket, FixedWindow])
def test_bad_limits_are_refused(cls: type) -> None:
    with pytest.raises(ValueError):
        cls(0, 60.0)
    with pytest.raises(ValueError):
        cls(10, float("nan"))


@pytest.mark.parametrize("cls", [SlidingWindow, TokenBucket, LeakyBucket, FixedWindow])
def test_a_used_limiter_comes_to_rest_and_then_decides_as_a_new_one(cls: type) -> None:
    used, fresh = cls(10, 60.0), cls(10, 60.0)
    assert used.at_rest(0.0)
    used.charge(100.0, 25.0)  # past its limit: in debt, overflowing, over the window
    assert not used.at_rest(100.0) and not used.at_rest(110.0)
    later = 100.0 + 4 * 60.0  # long enough for every algorithm to forget the burst
    assert used.at_rest(later)
    assert used.peek(later, 10.0) == fresh.peek(later, 10.0)  # dropping it changes nothing
