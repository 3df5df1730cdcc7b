"""An operator backs up a hub while it serves, restores it on an empty state dir, and finds every call
the hub had acknowledged before the backup began; a restore that would overwrite or trust a damaged
backup is refused."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.cli import cli_argv, cli_ok, run_cli
from tests.support.hubproc import ROOT, HubProcess, write_config

CLIENTS = 8
#: calls acknowledged before the backup is started, so it copies a ledger that is being written
WARM_CALLS = 200
# the starter plan's 1000 calls/min would turn the load into 429s
PLANS = '[plans.starter]\nrate_limits = { api_calls = "1000000/min" }\n'


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[HubProcess]:
    state = tmp_path / "state"
    state.mkdir()
    hub = HubProcess(state, write_config(tmp_path / "hub.toml", PLANS)).start()
    try:
        yield hub
    finally:
        hub.stop()


async def call_echo(session: aiohttp.ClientSession, url: str, key: str, n: int) -> tuple[int, dict[str, object]]:
    async with session.post(f"{url}/v1/call", json={"action": "echo", "payload": {"n": n}},
                            headers={"x-api-key": key}) as resp:
        return resp.status, await resp.json()


async def load(url: str, key: str, acks: list[tuple[int, str]], stop: asyncio.Event) -> None:
    """One client calling until ``stop``; every acknowledged call's receipt goes into ``acks`` as it comes."""
    async with aiohttp.ClientSession() as session:
        n = 0
        while not stop.is_set():
            status, body = await call_echo(session, url, key, n)
            assert status == 200, body
            receipt = body["receipt"]
            assert isinstance(receipt, dict)
            acks.append((int(receipt["seq"]), str(receipt["hash"])))
            n += 1


def ledger_rows(state_dir: Path, seqs: list[int]) -> dict[int, str]:
    wanted = set(seqs)
    conn = sqlite3.connect(f"file:{state_dir / 'ledger.db'}?mode=ro", uri=True)
    try:
        return {seq: hash_ for seq, hash_ in conn.execute("SELECT seq, hash FROM events") if seq in wanted}
    finally:
        conn.close()


async def test_a_backup_under_load_restores_every_call_acknowledged_before_it(
        serving: HubProcess, tmp_path: Path) -> None:
    hub = serving
    app_key = cli_ok(hub.state_dir, "key", "create", "--tenant", "default").splitlines()[0]
    acks: list[tuple[int, str]] = []
    stop = asyncio.Event()
    clients = [asyncio.create_task(load(hub.url, app_key, acks, stop)) for _ in range(CLIENTS)]
    try:
        async with asyncio.timeout(60):
            while len(acks) < WARM_CALLS:
                await asyncio.sleep(0.01)
        before_backup = list(acks)
        backup = await asyncio.create_subprocess_exec(
            *cli_argv(hub.state_dir, "backup", str(tmp_path / "backup")), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(backup.communicate(), 120)
        during = len(acks) - len(before_backup)
    finally:
        stop.set()
        await asyncio.gather(*clients)
    assert backup.returncode == 0, err.decode()
    manifest = json.loads(out)
    assert {"tenancy.db", "ledger.db", "jwt.secret", "tls/http3-key.pem"} <= set(manifest["files"])
    assert "endpoints.json" not in manifest["files"]
    assert during > 0, "no call was answered while the backup ran: it was not taken under load"
    backup_dir = tmp_path / "backup"
    assert backup_dir.stat().st_mode & 0o777 == 0o700
    assert all((backup_dir / name).stat().st_mode & 0o777 == 0o600 for name in (*manifest["files"], "manifest.json"))
    hub.stop()

    restored = tmp_path / "restored"
    report = json.loads(cli_ok(restored, "restore", str(backup_dir)))
    assert report["ledger"]["ok"] is True
    cli_ok(restored, "ledger", "verify")
    in_restored = ledger_rows(restored, [seq for seq, _ in before_backup])
    assert {seq: hash_ for seq, hash_ in before_backup} == in_restored

    again = HubProcess(restored, write_config(tmp_path / "restored.toml", PLANS)).start()
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await call_echo(session, again.url, app_key, 0)
    finally:
        again.stop()
    assert status == 200, body
    assert body["result"] == {"n": 0}


def test_restore_refuses_a_state_dir_that_is_not_empty(serving: HubProcess, tmp_path: Path) -> None:
    cli_ok(serving.state_dir, "backup", str(tmp_path / "backup"))
    done = run_cli(serving.state_dir, "restore", str(tmp_path / "backup"))
    assert done.returncode == 2
    assert "is not empty" in done.stderr and "restore only into an empty" in done.stderr
    assert serving.state_dir.joinpath("endpoints.json").exists()  # nothing of the running hub's was touched


def test_backup_refuses_a_destination_that_is_not_empty(serving: HubProcess, tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    done = run_cli(serving.state_dir, "backup", str(dest))
    assert done.returncode == 2
    assert "not an empty directory" in done.stderr
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]


def test_restore_refuses_a_tampered_backup_and_names_the_file(serving: HubProcess, tmp_path: Path) -> None:
    cli_ok(serving.state_dir, "backup", str(tmp_path / "backup"))
    secret = tmp_path / "backup" / "jwt.secret"
    data = bytearray(secret.read_bytes())
    data[0] ^= 0xFF
    secret.write_bytes(bytes(data))
    restored = tmp_path / "restored"
    done = run_cli(restored, "restore", str(tmp_path / "backup"))
    assert done.returncode == 2
    assert "jwt.secret does not match its sha256" in done.stderr
    assert not restored.exists() or not any(restored.iterdir())


def test_a_restored_hub_keeps_its_node_identity_and_fleet_certificate(serving: HubProcess, tmp_path: Path) -> None:
    """Restoring a fleet member on new hardware must not make it a stranger: same node key, same certificate."""
    import time

    from federation.fleet import FleetKey, install_certificate
    from federation.identity import NodeIdentity

    identity = NodeIdentity.load_or_create(serving.state_dir)  # the hub made it at start
    cert = FleetKey.generate("acme").sign_node(identity.public_key, "lab", now=time.time())
    install_certificate(serving.state_dir, cert.to_text(), identity)
    manifest = json.loads(cli_ok(serving.state_dir, "backup", str(tmp_path / "backup")))
    assert {"node.key", "fleet/node.cert"} <= set(manifest["files"])

    restored = tmp_path / "restored"
    cli_ok(restored, "restore", str(tmp_path / "backup"))
    assert json.loads(cli_ok(restored, "node", "id", "--json"))["node_id"] == identity.peer_id
    assert (restored / "fleet" / "node.cert").read_text() == (serving.state_dir / "fleet" / "node.cert").read_text()
    assert (restored / "node.key").stat().st_mode & 0o777 == 0o600
