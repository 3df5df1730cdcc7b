"""The systemd watchdog: pings at half of WatchdogSec, from the event loop, and none while it is blocked."""

from __future__ import annotations

import asyncio
import time

from daemon.runtime.systemd import Watchdog, reloading, status, watchdog_interval


def test_the_interval_is_half_of_what_systemd_asked_for() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, pid=42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=42) == 15.0


def test_no_watchdog_outside_systemd_or_for_another_process() -> None:
    assert watchdog_interval({}, pid=42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, pid=42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, pid=42) is None
    # the variables leaked to a child of the service: the pings are its main process's job
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "41"}, pid=42) is None


def test_status_is_one_line_and_reloading_carries_its_monotonic_stamp() -> None:
    assert status("serving:\n 3 modules") == "STATUS=serving: 3 modules"
    assert reloading(1_234) == ("RELOADING=1", "MONOTONIC_USEC=1234")
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    stamp = int(reloading()[1].partition("=")[2])
    assert before <= stamp <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


async def _pings_reach(pings: list[str], count: int) -> None:
    while len(pings) < count:
        await asyncio.sleep(0)


async def test_a_blocked_loop_sends_no_ping_and_the_pings_resume_after_it() -> None:
    pings: list[str] = []
    async with Watchdog(0.01, send=pings.append):
        await asyncio.wait_for(_pings_reach(pings, 3), 30)
        before = len(pings)
        time.sleep(0.2)  # the loop is stuck in a blocking call for 20 intervals: systemd must hear nothing
        assert len(pings) == before
        await asyncio.wait_for(_pings_reach(pings, before + 1), 30)
    assert set(pings) == {"WATCHDOG=1"}
    # cancelled cleanly at the hub's stop: no pinger left behind
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "systemd-watchdog"]


async def test_without_a_watchdog_nothing_runs() -> None:
    pings: list[str] = []
    async with Watchdog(None, send=pings.append):
        await asyncio.sleep(0)
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "systemd-watchdog"]
    assert pings == []
