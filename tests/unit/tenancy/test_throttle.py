"""The per-IP limiter and the failure tally, driven by a clock the test moves."""

from __future__ import annotations

from daemon.tenancy.records import AuditEvent
from daemon.tenancy.throttle import FailureTally, IpLimiter, client_key


def test_an_address_gets_its_burst_then_waits_for_the_refill() -> None:
    limiter = IpLimiter(3, 60.0)
    assert [limiter.take("10.0.0.1", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("10.0.0.1", 0.0) == 20.0  # one token per 20 s
    assert limiter.take("10.0.0.2", 0.0) == 0.0  # another address has its own bucket
    assert limiter.take("10.0.0.1", 20.0) == 0.0


def test_ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1"
    limiter = IpLimiter(1, 60.0)
    assert limiter.take("2001:db8::1", 0.0) == 0.0
    assert limiter.take("2001:db8::2", 0.0) > 0  # same /64: rotating addresses does not help


def test_the_table_stays_bounded_and_idle_addresses_go_first() -> None:
    limiter = IpLimiter(2, 1.0, max_ips=100)
    for n in range(10_000):
        limiter.take(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", n / 1000)
        assert len(limiter) <= 100
    limiter.prune(1_000.0)
    assert len(limiter) == 0  # everyone refilled long ago: nothing is kept


def test_alike_failures_of_a_minute_are_one_row_with_a_count() -> None:
    tally = FailureTally()
    for n in range(50):
        assert tally.add(AuditEvent("auth.api_key", f"key:dai_{n:08x}", None, "", "10.0.0.9", "ua", False,
                                    "invalid API key"), 60.0 + n) == []
    tally.add(AuditEvent("auth.api_key", "anonymous", None, "", "10.0.0.8", "ua", False, "invalid API key"), 100.0)
    assert tally.due(119.0) == []  # the minute is not over yet
    rows = tally.due(120.0)
    assert [(r.ip, r.count, r.actor) for r in rows] == [("10.0.0.9", 50, "several"), ("10.0.0.8", 1, "anonymous")]
    assert len(tally) == 0


def test_a_full_tally_hands_everything_out_early() -> None:
    tally = FailureTally(max_keys=10)
    handed: list[AuditEvent] = []
    for n in range(1000):
        handed += tally.add(AuditEvent("auth.jwt", "anonymous", None, "", f"10.0.{n >> 8}.{n & 255}", "", False,
                                       "malformed token"), 0.0)
        assert len(tally) <= 10
    assert sum(r.count for r in handed + tally.drain()) == 1000
