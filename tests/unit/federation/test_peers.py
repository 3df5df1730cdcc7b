"""The peer table, driven by a clock we pass in: adverts, expiry, choice, failover, redial, bounds."""

from __future__ import annotations

import random
from typing import Any

import pytest

from federation.adverts import Advert, AdvertisedCapability, schema_hash
from federation.peers import PeerTable, PeerView

SCHEMA = {"type": "object"}
A, B, C, D = "12D3KooWAaaa", "12D3KooWBbbb", "12D3KooWCccc", "12D3KooWDddd"


def cap(action: str, streaming: bool = False) -> AdvertisedCapability:
    return AdvertisedCapability(action, streaming, schema_hash(SCHEMA, None), f"does {action}", SCHEMA, None)


def advert(node: str, seq: int, *actions: str, load: float = 0.0, addrs: tuple[str, ...] = ()) -> Advert:
    return Advert(node_id=node, site=f"site-{node[-1]}", seq=seq, version="0.9", load=load, free_slots=2,
                  capabilities=tuple(cap(a) for a in actions), addrs=addrs)


def fleet(*nodes: str, action: str = "text.summarize", now: float = 0.0, **kw: Any) -> PeerTable:
    """A table that has seen each node and holds its advert for ``action``."""
    table = PeerTable(rng=random.Random(7), **kw)
    for node in nodes:
        assert table.seen(node, f"site-{node[-1]}", [f"/ip4/10.0.0.{len(table)}/tcp/4701"], now)
        assert table.apply_advert(advert(node, 1, action), now)
    return table


# -- adverts and expiry ---------------------------------------------------------------------------
def test_a_peer_must_be_seen_before_its_adverts_count() -> None:
    table = PeerTable()
    assert not table.apply_advert(advert(A, 1, "echo"), 0.0)
    assert table.actions(0.0) == {}


def test_a_replayed_or_out_of_order_advert_is_ignored() -> None:
    table = fleet(A, action="echo")
    assert table.apply_advert(advert(A, 5, "echo", "audio.vad"), 1.0)
    assert not table.apply_advert(advert(A, 5, "echo"), 2.0)  # the same seq again: a replay
    assert not table.apply_advert(advert(A, 3, "echo"), 3.0)  # an older one arriving late
    assert table.actions(3.0) == {"audio.vad": [A], "echo": [A]}
    assert table.views(3.0)[0].advert_age_s == 2.0  # the replay did not refresh the advert either


def test_an_expired_advert_still_refuses_its_replay() -> None:
    table = fleet(A, action="echo")
    assert table.expire(100.0) == [A]
    assert not table.apply_advert(advert(A, 1, "echo"), 100.0)
    assert table.apply_advert(advert(A, 2, "echo"), 100.0)


@pytest.mark.parametrize(("now", "routes"), [
    (0.0, {"text.summarize": [A]}),
    (29.9, {"text.summarize": [A]}),  # two missed adverts: still there
    (30.0, {}),  # the third interval ends: the dead peer's routes are gone
    (45.0, {}),
])
def test_a_silent_peers_routes_vanish_after_three_intervals(now: float, routes: dict[str, list[str]]) -> None:
    table = fleet(A)  # the default interval: 10 s
    assert table.actions(now) == routes
    assert table.candidates("text.summarize", now) == list(routes.get("text.summarize", []))
    assert (table.capability("text.summarize", now) is not None) == bool(routes)


def test_expire_reports_whose_routes_vanished_and_fresh_adverts_keep_them() -> None:
    table = fleet(A, B, C)
    table.apply_advert(advert(B, 2, "text.summarize"), 15.0)
    assert table.expire(29.9) == []
    assert table.expire(30.0) == [A, C]
    assert table.expire(31.0) == []  # reported once
    assert table.actions(31.0) == {"text.summarize": [B]}
    assert table.expire(45.0) == [B]


def test_the_interval_and_count_are_the_tables_settings() -> None:
    table = fleet(A, advert_interval_s=2.0, expire_intervals=5)
    assert table.candidates("text.summarize", 9.9) == [A]
    assert table.candidates("text.summarize", 10.0) == []


def test_a_lost_link_takes_the_peer_out_of_choice_but_keeps_its_advert_until_expiry() -> None:
    table = fleet(A, B)
    table.lost(A, 5.0)
    assert table.candidates("text.summarize", 6.0) == [B]
    assert table.actions(6.0) == {"text.summarize": [B, A]}  # those that can take calls first
    assert table.views(6.0)[0].state == "down"
    table.seen(A, "site-A", [], 8.0)  # the link is back before the advert expired
    assert sorted(table.candidates("text.summarize", 8.0)) == [A, B]


def test_capability_describes_the_action_from_the_freshest_advert() -> None:
    table = fleet(A, B, action="echo")
    table.apply_advert(Advert(B, "site-B", 2, "0.9", 0.0, 1, (cap("echo", streaming=True),)), 5.0)
    spec = table.capability("echo", 6.0)
    assert spec is not None and spec.streaming
    assert table.capability("nothing", 6.0) is None


# -- choice ---------------------------------------------------------------------------------------
def test_the_nearest_least_loaded_peer_comes_first() -> None:
    table = fleet(A, B, C)
    table.rtt(A, 0.100, 0.0)  # far and idle:   0.100 x 0.05 = 0.0050
    table.rtt(B, 0.010, 0.0)  # near and busy:  0.010 x 0.85 = 0.0085
    table.apply_advert(advert(B, 2, "text.summarize", load=0.8), 0.0)
    table.rtt(C, 0.002, 0.0)  # nearest, idle:  0.002 x 0.05 = 0.0001
    assert table.candidates("text.summarize", 1.0) == [C, A, B]


def test_an_unmeasured_peer_counts_as_fifty_milliseconds_away() -> None:
    table = fleet(A, B, C)
    table.rtt(A, 0.040, 0.0)
    table.rtt(B, 0.060, 0.0)
    assert table.candidates("text.summarize", 1.0)[-1] == B  # C (unknown: 50 ms) sits between A and B
    assert set(table.candidates("text.summarize", 1.0)[:2]) == {A, C}  # within 10 %: a tie


def test_ties_rotate_round_robin_one_step_per_call() -> None:
    table = fleet(A, B, C)
    for node, rtt in ((A, 0.0100), (B, 0.0105), (C, 0.0500)):  # A and B within 10 %, C far
        table.rtt(node, rtt, 0.0)
    firsts = [table.candidates("text.summarize", 1.0) for _ in range(4)]
    assert firsts == [[A, B, C], [B, A, C], [A, B, C], [B, A, C]]


def test_each_action_has_its_own_round_robin_and_actions_does_not_move_it() -> None:
    table = fleet(A, B, action="echo")
    table.apply_advert(advert(A, 2, "echo", "audio.vad"), 0.0)
    table.apply_advert(advert(B, 2, "echo", "audio.vad"), 0.0)
    assert table.candidates("echo", 1.0)[0] == A
    table.actions(1.0)
    assert table.candidates("audio.vad", 1.0)[0] == A
    assert table.candidates("echo", 1.0)[0] == B


def test_excluded_peers_are_never_candidates() -> None:
    table = fleet(A, B, C)
    assert sorted(table.candidates("text.summarize", 1.0, exclude={A, C})) == [B]
    assert table.candidates("text.summarize", 1.0, exclude=[A, B, C]) == []


def test_rtt_is_a_moving_average() -> None:
    table = fleet(A)
    table.rtt(A, 0.100, 0.0)
    table.succeeded(A, 0.200, 1.0)
    table.rtt(A, float("nan"), 2.0)  # a bad sample is dropped
    table.rtt(A, -1.0, 2.0)
    assert table.views(2.0)[0].rtt_ms == pytest.approx(130.0)


# -- failover and backoff -------------------------------------------------------------------------
def test_a_failed_peer_goes_to_the_back_and_the_next_one_takes_over() -> None:
    table = fleet(A, B, C)
    for node, rtt in ((A, 0.001), (B, 0.010), (C, 0.100)):
        table.rtt(node, rtt, 0.0)
    assert table.candidates("text.summarize", 1.0) == [A, B, C]
    table.failed(A, 1.0)
    assert table.candidates("text.summarize", 1.0) == [B, C]
    table.failed(B, 1.0)
    assert table.candidates("text.summarize", 1.0) == [C]
    assert table.candidates("text.summarize", 2.0) == [A, B, C]  # 1 s passed: both tried again (half-open)


@pytest.mark.parametrize(("failures", "down_for"), [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (30, 60.0)])
def test_failures_in_a_row_double_the_down_time_up_to_a_minute(failures: int, down_for: float) -> None:
    table = fleet(A)
    for _ in range(failures):
        table.failed(A, 100.0)
    table.apply_advert(advert(A, 2, "text.summarize"), 100.0 + down_for)  # keep the advert alive
    assert table.candidates("text.summarize", 100.0 + down_for - 0.01) == []
    assert table.candidates("text.summarize", 100.0 + down_for) == [A]
    (view,) = table.views(100.0)
    assert view.state == "down" and view.retry_in_s == down_for


def test_a_half_open_peer_that_fails_again_waits_longer_and_success_clears_it() -> None:
    table = fleet(A)
    table.failed(A, 0.0)  # down until 1
    table.failed(A, 1.0)  # tried again at 1, failed: down until 3
    assert table.candidates("text.summarize", 2.9) == []
    assert table.candidates("text.summarize", 3.0) == [A]
    table.succeeded(A, 0.01, 3.0)
    table.failed(A, 4.0)  # the count started over: 1 s again
    assert table.candidates("text.summarize", 5.0) == [A]


# -- membership and bounds ------------------------------------------------------------------------
def test_past_max_peers_the_longest_down_peer_is_evicted() -> None:
    table = fleet(A, B, C, max_peers=3)
    table.lost(B, 10.0)
    table.lost(A, 12.0)
    assert table.seen(D, "site-D", [], 13.0)
    assert B not in table and A in table and D in table and len(table) == 3


def test_past_max_peers_a_newcomer_is_refused_while_every_link_is_up() -> None:
    table = fleet(A, B, max_peers=2)
    assert not table.seen(C, "site-C", [], 1.0)
    assert C not in table and len(table) == 2
    assert table.seen(A, "site-A", [], 1.0)  # a peer already held is always refreshed


def test_forget_drops_everything_about_a_peer() -> None:
    table = fleet(A)
    table.failed(A, 0.0)
    table.forget(A)
    table.forget(A)  # twice is fine
    assert A not in table and table.views(0.0) == [] and table.to_redial(100.0) == []
    assert not table.apply_advert(advert(A, 9, "echo"), 0.0)


def test_calls_about_unknown_peers_are_ignored() -> None:
    table = PeerTable()
    for call in (table.failed, table.lost, table.connected):
        call(A, 0.0)
    table.succeeded(A, 0.1, 0.0)
    table.rtt(A, 0.1, 0.0)
    assert len(table) == 0


# -- redial ---------------------------------------------------------------------------------------
def redial_times(table: PeerTable, until: float, step: float = 0.01) -> list[float]:
    times, now = [], 0.0
    while now <= until:
        if table.to_redial(now):
            times.append(round(now, 2))
        now += step
    return times


def test_a_lost_peer_is_redialled_with_backoff_and_jitter() -> None:
    table = PeerTable(rng=random.Random(1))
    table.seen(A, "site-A", ["/ip4/10.0.0.1/tcp/4701"], 0.0)
    table.lost(A, 0.0)
    times = redial_times(table, 130.0)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    for gap, base in zip(gaps, [1, 2, 4, 8, 16, 30, 30, 30], strict=False):
        assert base <= gap <= base * 1.2 + 0.02  # jitter up to 20 % (plus the step of the clock)
    assert len({round(g / b, 3) for g, b in zip(gaps, [1, 2, 4, 8, 16, 30], strict=False)}) > 1  # jittered


def test_redial_hands_back_the_addresses_and_is_the_same_for_the_same_seed() -> None:
    def run(seed: int) -> list[float]:
        table = PeerTable(rng=random.Random(seed))
        table.seen(A, "site-A", ["/ip4/10.0.0.1/tcp/4701"], 0.0)
        table.lost(A, 0.0)
        assert table.to_redial(0.5) == []
        assert table.to_redial(1.3) == [(A, ("/ip4/10.0.0.1/tcp/4701",))]
        assert table.to_redial(1.3) == []  # scheduled again at once
        return redial_times(table, 60.0)
    assert run(3) == run(3)


def test_the_rng_can_be_passed_per_call() -> None:
    table = PeerTable(rng=random.Random(0))
    table.seen(A, "site-A", [], 0.0)
    table.lost(A, 0.0)
    assert table.to_redial(1.2, random.Random(5)) == [(A, ())]


def test_connected_stops_the_redials_and_a_new_loss_starts_over() -> None:
    table = PeerTable(rng=random.Random(2))
    table.seen(A, "site-A", ["/ip4/10.0.0.1/tcp/4701"], 0.0)
    table.lost(A, 0.0)
    assert table.to_redial(1.2) and not table.to_redial(3.0)
    table.connected(A, 3.0)
    assert table.to_redial(100.0) == []
    table.lost(A, 100.0)
    assert table.to_redial(100.9) == [] and table.to_redial(101.2) != []  # 1 s again, not 4


def test_an_advert_updates_the_addresses_to_redial() -> None:
    table = fleet(A)
    table.apply_advert(advert(A, 2, "text.summarize", addrs=("/ip4/192.168.1.9/tcp/4701",)), 1.0)
    table.lost(A, 1.0)
    assert table.to_redial(2.5) == [(A, ("/ip4/192.168.1.9/tcp/4701",))]


# -- views ----------------------------------------------------------------------------------------
def test_views_show_what_an_operator_needs() -> None:
    table = fleet(A, B, action="echo")
    table.apply_advert(Advert(A, "site-A", 2, "0.9", 0.5, 4, (cap("echo"), cap("audio.vad"))), 3.0)
    table.rtt(A, 0.012, 3.0)
    table.failed(B, 4.0)
    a, b = table.views(4.5)
    assert a == PeerView(node_id=A, site="site-a", addrs=("/ip4/10.0.0.0/tcp/4701",), state="up", rtt_ms=12.0,
                         advert_age_s=1.5, load=0.5, free_slots=4, capabilities=["audio.vad", "echo"],
                         down_until=None, retry_in_s=None)
    assert (b.state, b.rtt_ms, b.down_until, b.retry_in_s) == ("down", None, 5.0, 0.5)
    assert a.to_dict()["capabilities"] == ["audio.vad", "echo"] and "down_until" not in a.to_dict()
    (_, b_late) = table.views(40.0)
    assert (b_late.state, b_late.advert_age_s, b_late.load, b_late.capabilities) == ("up", None, None, [])
