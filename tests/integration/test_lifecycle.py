"""Start, reload and stop: what an operator sees of the daemon's lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import select
import signal
import stat
import subprocess

import aiohttp

from tests.support.cli import cli_argv, run_cli
from tests.support.doorclients import Hub, metric
from tests.support.hubproc import ROOT, HubProcess, write_config


async def test_first_start_creates_the_admin_key_file_and_never_logs_the_key(tmp_path) -> None:
    # stdout and stderr go to a file here, as to the journal under systemd
    hub = HubProcess(tmp_path, write_config(tmp_path / "hub.toml")).start()
    try:
        key_file = tmp_path / "bootstrap-admin.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert hub.admin_key and hub.admin_key not in hub.log()
        assert str(key_file) in hub.log()  # the operator is told where to read it
    finally:
        assert hub.stop() == 0
    hub.start()  # a second start: same key file, nothing new said about it
    try:
        assert hub.log().count("bootstrap admin key") == 1
        assert hub.admin_key not in hub.log()
    finally:
        hub.stop()


def test_on_a_terminal_the_first_start_shows_the_admin_key_once(tmp_path) -> None:
    config = write_config(tmp_path / "hub.toml")
    primary, secondary = pty.openpty()
    process = subprocess.Popen([*cli_argv(tmp_path, "serve", "--config", str(config))], cwd=ROOT,
                               stdin=secondary, stdout=secondary, stderr=secondary)
    os.close(secondary)
    seen = bytearray()
    key_file = tmp_path / "bootstrap-admin.key"
    try:
        # read what the terminal shows until the key is on it (the hub writes the file first)
        while b"dai_" not in seen or b"\n" not in seen[seen.index(b"dai_"):]:
            ready, _, _ = select.select([primary], [], [], 30)
            assert ready, f"the hub showed nothing more on its terminal: {seen.decode(errors='replace')}"
            try:
                seen += os.read(primary, 4096)
            except OSError:  # the hub closed the terminal: it exited
                break
        assert key_file.read_text().strip() in seen.decode(errors="replace")
    finally:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(OSError):
            while select.select([primary], [], [], 10)[0] and os.read(primary, 4096):
                pass  # keep draining so the hub never blocks on a full terminal while it stops
        assert process.wait(30) == 0
        os.close(primary)


async def test_sigterm_lets_in_flight_calls_finish_then_exits_cleanly(tmp_path) -> None:
    hub = HubProcess(tmp_path, write_config(tmp_path / "hub.toml")).start()
    try:
        async with aiohttp.ClientSession(headers={"X-API-Key": hub.admin_key}) as session:
            slow = asyncio.create_task(session.post(
                f"{hub.url}/v1/call", json={"action": "echo.stream", "payload": {"steps": 4, "delay_ms": 300}}))
            async with asyncio.timeout(10):  # the call is running in echo when the signal comes
                while await metric(Hub(hub.endpoints, hub.state_dir), "democratic_ai_in_flight", module="echo") < 1:
                    await asyncio.sleep(0.02)
            hub.signal(signal.SIGTERM)
            resp = await asyncio.wait_for(slow, 15)
            assert resp.status == 200
            assert (await resp.json())["result"]["steps"] == 4
        assert hub.process is not None
        assert await asyncio.to_thread(hub.process.wait, 15) == 0
        assert not (tmp_path / "endpoints.json").exists()
    finally:
        hub.kill()


async def test_sighup_reloads_the_modules_config(tmp_path) -> None:
    config = write_config(tmp_path / "hub.toml", modules=("echo",))
    hub = HubProcess(tmp_path, config).start()
    try:
        async with aiohttp.ClientSession(headers={"X-API-Key": hub.admin_key}) as session:
            async def actions() -> set[str]:
                async with session.get(f"{hub.url}/v1/capabilities") as resp:
                    return {c["action"] for c in (await resp.json())["capabilities"]}

            assert "text.summarize" not in await actions()
            write_config(config, modules=("echo", "text.summarize"))
            hub.signal(signal.SIGHUP)
            for _ in range(100):
                if "text.summarize" in await actions():
                    break
                await asyncio.sleep(0.05)
            assert "text.summarize" in await actions()
            write_config(config, modules=("text.summarize",))
            hub.signal(signal.SIGHUP)
            for _ in range(100):
                if "echo" not in await actions():
                    break
                await asyncio.sleep(0.05)
            assert await actions() == {"text.summarize"}
    finally:
        hub.stop()


async def test_a_module_that_fails_to_start_is_reported_and_the_rest_are_served(tmp_path) -> None:
    hub = HubProcess(tmp_path, write_config(tmp_path / "hub.toml", modules=("echo", "no.such.module"))).start()
    try:
        async with aiohttp.ClientSession(headers={"X-API-Key": hub.admin_key}) as session:
            async with session.get(f"{hub.url}/ready") as resp:
                ready = await resp.json()
            assert ready["ready"] is True and ready["modules"] == ["echo"]
            assert ready["failed_modules"][0]["module"] == "no.such.module"
            async with session.post(f"{hub.url}/v1/call", json={"action": "echo", "payload": {"ok": 1}}) as resp:
                assert resp.status == 200
    finally:
        hub.stop()


def test_a_bad_config_stops_the_start_naming_the_key(tmp_path) -> None:
    (tmp_path / "hub.toml").write_text('[http]\nlisten = "nowhere"\n')
    result = run_cli(tmp_path, "serve", "--config", str(tmp_path / "hub.toml"), timeout=30)
    assert result.returncode == 2
    assert "http.listen" in result.stderr


def test_endpoints_file_names_the_real_ports(tmp_path) -> None:
    hub = HubProcess(tmp_path, write_config(tmp_path / "hub.toml")).start()
    try:
        endpoints = json.loads((tmp_path / "endpoints.json").read_text())
        assert endpoints["http"].startswith("http://127.0.0.1:") and not endpoints["http"].endswith(":0")
    finally:
        hub.stop()


def test_a_port_already_taken_stops_the_start_with_a_clear_message(tmp_path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for section in ("http", "grpc"):
            config = write_config(tmp_path / f"{section}.toml")
            config.write_text(config.read_text().replace(f'[{section}]\nlisten = "127.0.0.1:0"',
                                                         f'[{section}]\nlisten = "127.0.0.1:{port}"'))
            result = run_cli(tmp_path / section, "serve", "--config", str(config))
            assert result.returncode == 1, result.stderr[-2000:]
            assert "cannot start" in result.stderr and str(port) in result.stderr
            assert "Traceback" not in result.stderr


def _ledger_writers(state_dir) -> list[int]:
    """pids of ledger writer processes working on this state dir."""
    import os

    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "daemon.metering.ledger.process" in cmdline and str(state_dir) in cmdline:
            found.append(int(pid))
    return found


async def test_the_ledger_writer_process_follows_the_hub_even_after_kill_9(tmp_path) -> None:
    hub = HubProcess(tmp_path, write_config(tmp_path / "hub.toml", modules=("echo",))).start()
    try:
        assert len(_ledger_writers(tmp_path)) == 1
        hub.kill()  # SIGKILL: the writer reads EOF, commits what it holds and exits
        for _ in range(100):
            if not _ledger_writers(tmp_path):
                break
            await asyncio.sleep(0.1)
        assert _ledger_writers(tmp_path) == []
    finally:
        hub.kill()


def _hold_ledger_write_lock(state_dir):
    """What a CLI write does to the ledger: hold SQLite's write lock, so a new writer cannot open it."""
    import sqlite3

    conn = sqlite3.connect(state_dir / "ledger.db", isolation_level=None, timeout=10)
    conn.execute("BEGIN IMMEDIATE")
    return conn


async def _ready(session, hub) -> tuple[int, dict]:
    async with session.get(f"{hub.url}/ready") as resp:
        return resp.status, await resp.json()


async def test_a_ledger_writer_that_dies_comes_back_and_ready_goes_503_then_200(tmp_path) -> None:
    import os

    hub = HubProcess(tmp_path, write_config(tmp_path / "hub.toml", modules=("echo",))).start()
    try:
        async with aiohttp.ClientSession(headers={"X-API-Key": hub.admin_key}) as session:
            async with session.post(f"{hub.url}/v1/call", json={"action": "echo", "payload": {}}) as resp:
                before = (await resp.json())["receipt"]
            (writer,) = _ledger_writers(tmp_path)
            lock = _hold_ledger_write_lock(tmp_path)  # the next writer waits for it
            try:
                os.kill(writer, signal.SIGKILL)
                for _ in range(200):
                    status, ready = await _ready(session, hub)
                    if status == 503:
                        break
                    await asyncio.sleep(0.05)
                assert status == 503 and ready["ledger"] == "unavailable"
                async with session.post(f"{hub.url}/v1/call", json={"action": "echo", "payload": {}}) as resp:
                    assert resp.status == 503 and (await resp.json())["error"]["code"] == "UNAVAILABLE"
                    assert int(resp.headers["Retry-After"]) >= 1
                async with session.get(f"{hub.url}/health") as resp:
                    assert resp.status == 200  # alive: the hub is bringing its writer back
            finally:
                lock.rollback()
                lock.close()
            for _ in range(400):
                status, ready = await _ready(session, hub)
                if status == 200:
                    break
                await asyncio.sleep(0.05)
            assert status == 200 and ready["ledger"] == "ok"
            assert _ledger_writers(tmp_path) not in ([], [writer])
            async with session.post(f"{hub.url}/v1/call", json={"action": "echo", "payload": {}}) as resp:
                assert resp.status == 200
                after = (await resp.json())["receipt"]
            assert after["seq"] == before["seq"] + 1  # the chain goes on from the last committed entry
            async with session.get(f"{hub.url}/metrics") as resp:
                assert "democratic_ai_ledger_restarts_total 1.0" in await resp.text()
    finally:
        assert hub.stop() == 0
    verify = run_cli(tmp_path, "ledger", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def test_a_ledger_writer_that_cannot_come_back_in_time_stops_the_hub_non_zero(tmp_path) -> None:
    import os

    config = write_config(tmp_path / "hub.toml", "[ledger]\nrestart_within_s = 1\n", modules=("echo",))
    hub = HubProcess(tmp_path, config).start()
    try:
        (writer,) = _ledger_writers(tmp_path)
        lock = _hold_ledger_write_lock(tmp_path)
        try:
            os.kill(writer, signal.SIGKILL)
            assert hub.process is not None
            code = await asyncio.to_thread(hub.process.wait, 60)
        finally:
            lock.rollback()
            lock.close()
        assert code != 0  # so systemd's Restart=on-failure starts it again
        assert "did not come back within 1 s" in hub.log()
        assert _ledger_writers(tmp_path) == []
    finally:
        hub.kill()
    hub.start()  # what systemd does next: the hub starts whole, on the same ledger
    try:
        assert _ledger_writers(tmp_path) != []
    finally:
        assert hub.stop() == 0


def test_an_unusable_ledger_stops_the_start_with_a_clear_message(tmp_path) -> None:
    (tmp_path / "ledger.db").mkdir()  # a directory where the ledger file should be
    result = run_cli(tmp_path, "serve", "--config", str(write_config(tmp_path / "hub.toml")))
    assert result.returncode == 1
    assert "cannot open the usage ledger" in result.stderr and "Traceback" not in result.stderr


async def test_a_reload_that_fails_keeps_serving_and_reports_ready_again(tmp_path, monkeypatch) -> None:
    import subprocess
    import sys
    import time

    from tests.support.hubproc import ROOT
    from tests.support.sdnotify import NotifySocket

    with NotifySocket(tmp_path / "notify.sock") as listener:
        monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
        config = write_config(tmp_path / "hub.toml", modules=("echo",))
        hub = HubProcess(tmp_path, config).start()
        # a remote module takes the id a built-in module will want at the next reload
        remote = subprocess.Popen(
            [sys.executable, "-m", "tests.support.remote_module_proc", hub.url, hub.admin_key, "text.summarize"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            listener.until("READY", "1")
            assert remote.stdout is not None and remote.stdout.readline().strip() == "attached"
            write_config(config, modules=("echo", "text.summarize"))
            before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            hub.signal(signal.SIGHUP)
            reloading = listener.receive()
            assert reloading["RELOADING"] == "1" and reloading["STATUS"] == "reloading modules"
            # systemd pairs RELOADING=1 with the moment it was sent, on the one monotonic clock of the machine
            assert before <= int(reloading["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            back = listener.receive()  # systemd sees the hub back, not stuck reloading
            assert back == {"READY": "1", "STATUS": "serving: 2 modules, 1 failed to load"}
            async with aiohttp.ClientSession(headers={"X-API-Key": hub.admin_key}) as session:
                async with session.post(f"{hub.url}/v1/call", json={"action": "echo", "payload": {"ok": 1}}) as resp:
                    assert resp.status == 200
                async with session.post(f"{hub.url}/v1/call",
                                        json={"action": "text.upper", "payload": {"text": "still here"}}) as resp:
                    assert resp.status == 200 and (await resp.json())["result"]["text"] == "STILL HERE"
                async with session.get(f"{hub.url}/ready") as resp:
                    report = await resp.json()
            assert resp.status == 200 and report["ready"] is True
            assert [f["module"] for f in report["failed_modules"]] == ["text.summarize"]
            assert "text.summarize" in report["failed_modules"][0]["error"]
            assert "text.summarize" in hub.log() and '"level": "ERROR"' in hub.log()
        finally:
            remote.kill()
            remote.wait()
            assert hub.stop() == 0
