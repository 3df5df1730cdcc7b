"""Type=notify, as systemd sees it: STATUS lines through start, READY=1 once every door serves,
watchdog pings from the event loop that stop when the hub stalls, STOPPING=1 and the drain."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support.doorclients import Hub, call
from tests.support.hubproc import HubProcess, write_config
from tests.support.sdnotify import NotifySocket

#: WATCHDOG_USEC the tests give the hub: a ping every 0.2 s
WATCHDOG_USEC = 400_000
#: how long a stopped hub is watched for pings that must not come: many ping intervals
SILENCE_S = 1.5


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with NotifySocket(tmp_path / "notify.sock") as listener:
        monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
        yield listener


def _stopped(pid: int) -> bool:
    """The process is in the stopped state ('T' in /proc/PID/stat): SIGSTOP took effect."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0] == "T"


async def test_the_hub_says_what_it_does_and_is_ready_only_when_every_door_serves(tmp_path, notify_socket) -> None:
    hub = HubProcess(tmp_path, write_config(tmp_path / "hub.toml", modules=("echo",))).start()
    try:
        ready = notify_socket.until("READY", "1")
        # what `systemctl status democratic-ai` showed while the hub started, then what it shows now
        starting = notify_socket.statuses()[:-1]
        assert starting[0] == "opening tenancy and the usage ledger"
        assert "loading modules: echo" in starting and starting[-1] == "starting doors"
        assert ready["STATUS"] == "serving: 1 modules"
        # READY=1 means every door answers and the ledger bills: a call through each door succeeds
        doors = Hub(hub.endpoints, hub.state_dir)
        for door in ("http", "h3", "grpc", "mcp-initialize"):
            outcome = await call(door, doors, "echo", {"n": 1}, key=hub.admin_key)
            assert outcome.code is None, (door, outcome)
        async with aiohttp.ClientSession() as session, session.get(f"{hub.url}/ready") as resp:
            assert resp.status == 200 and (await resp.json())["ledger"] == "ok"
    finally:
        assert hub.stop() == 0
    stopping = notify_socket.until("STOPPING", "1")
    assert stopping["STATUS"] == "draining: 0 calls in flight"
    assert notify_socket.until("STATUS")["STATUS"] == "stopping modules, closing the ledger and tenancy"


def test_a_stalled_hub_stops_feeding_the_watchdog_and_feeds_it_again_when_it_runs(
        tmp_path, notify_socket, monkeypatch) -> None:
    # what systemd sets for WatchdogSec=0.4s (no WATCHDOG_PID: the variable is then for whoever reads it)
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    hub = HubProcess(tmp_path, write_config(tmp_path / "hub.toml", modules=("echo",))).start()
    assert hub.process is not None
    pid = hub.process.pid
    try:
        notify_socket.until("READY", "1")
        for _ in range(3):  # pings keep coming while the hub runs
            notify_socket.until("WATCHDOG", "1")
        hub.signal(signal.SIGSTOP)  # the whole hub stalls, as a loop stuck in a blocking call would
        deadline = time.monotonic() + 30
        while not _stopped(pid):
            assert time.monotonic() < deadline, "the hub did not stop on SIGSTOP"
            time.sleep(0.01)
        notify_socket.drain()  # pings sent before it stopped
        with pytest.raises(TimeoutError):
            notify_socket.receive(timeout=SILENCE_S)  # systemd would now see WatchdogSec pass and restart it
        hub.signal(signal.SIGCONT)
        assert notify_socket.until("WATCHDOG", "1") == {"WATCHDOG": "1"}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        assert hub.stop() == 0


def test_a_watchdog_meant_for_another_process_is_not_fed(tmp_path, notify_socket, monkeypatch) -> None:
    # WATCHDOG_PID names the service's main process; a hub started by it (inheriting the variables) keeps quiet
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    hub = HubProcess(tmp_path, write_config(tmp_path / "hub.toml", modules=("echo",))).start()
    try:
        notify_socket.until("READY", "1")
    finally:
        assert hub.stop() == 0
    notify_socket.until("STOPPING", "1")
    assert not [m for m in notify_socket.seen if "WATCHDOG" in m]


def test_without_notify_socket_nothing_is_sent(monkeypatch) -> None:
    from daemon.runtime import systemd

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
