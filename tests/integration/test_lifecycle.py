"""Start, reload and stop: what an operator sees of the daemon's lifecycle."""

from __future__ import annotations

import asyncio
import json
import signal
import stat

import aiohttp

from tests.support.cli import run_cli
from tests.support.hubproc import HubProcess, write_config


async def test_first_start_creates_the_admin_key_file_private_and_prints_it_once(tmp_path) -> None:
    hub = HubProcess(tmp_path, write_config(tmp_path / "hub.toml")).start()
    try:
        key_file = tmp_path / "bootstrap-admin.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert hub.admin_key in hub.log()
    finally:
        assert hub.stop() == 0
    hub.start()  # a second start: same key file, no new key printed
    try:
        assert hub.log().count("bootstrap admin key") == 1
    finally:
        hub.stop()


async def test_sigterm_lets_in_flight_calls_finish_then_exits_cleanly(tmp_path) -> None:
    hub = HubProcess(tmp_path, write_config(tmp_path / "hub.toml")).start()
    try:
        async with aiohttp.ClientSession(headers={"X-API-Key": hub.admin_key}) as session:
            slow = asyncio.create_task(session.post(
                f"{hub.url}/v1/call", json={"action": "echo.stream", "payload": {"steps": 4, "delay_ms": 300}}))
            await asyncio.sleep(0.4)
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


async def test_if_the_ledger_writer_dies_calls_are_unavailable_and_not_ready(tmp_path) -> None:
    import os

    hub = HubProcess(tmp_path, write_config(tmp_path / "hub.toml", modules=("echo",))).start()
    try:
        async with aiohttp.ClientSession(headers={"X-API-Key": hub.admin_key}) as session:
            (writer,) = _ledger_writers(tmp_path)
            os.kill(writer, signal.SIGKILL)
            await asyncio.sleep(0.5)
            async with session.post(f"{hub.url}/v1/call", json={"action": "echo", "payload": {}}) as resp:
                assert resp.status == 503 and (await resp.json())["error"]["code"] == "UNAVAILABLE"
            async with session.get(f"{hub.url}/ready") as resp:
                ready = await resp.json()
            assert resp.status == 503 and ready["ledger"] == "unavailable"
            async with session.get(f"{hub.url}/health") as resp:
                assert resp.status == 200  # alive, so systemd's watchdog or an operator can act
    finally:
        hub.stop()


def test_an_unusable_ledger_stops_the_start_with_a_clear_message(tmp_path) -> None:
    (tmp_path / "ledger.db").mkdir()  # a directory where the ledger file should be
    result = run_cli(tmp_path, "serve", "--config", str(write_config(tmp_path / "hub.toml")))
    assert result.returncode == 1
    assert "cannot open the usage ledger" in result.stderr and "Traceback" not in result.stderr
