"""``democratic-ai doctor`` beside a serving hub: its ports are the hub's, not a conflict; no config, an error;
a hub's fleet membership: its node id, its fleet, and a certificate that is not its own."""

from __future__ import annotations

import json
import time
from pathlib import Path

from federation.fleet import CERT_FILE, FleetKey, install_certificate
from federation.identity import NodeIdentity
from tests.support.cli import run_cli
from tests.support.hubproc import HubProcess


def config_on_the_hubs_ports(hub: HubProcess, path: Path) -> Path:
    ports = {door: str(hub.endpoints[door]).rsplit(":", 1)[1] for door in ("http", "http3", "grpc")}
    path.write_text("".join(f'[{door}]\nlisten = "127.0.0.1:{port}"\n' for door, port in ports.items())
                    + "[mdns]\nenabled = false\n[modules]\nenabled = [\"echo\"]\n")
    return path


def test_doctor_finds_a_serving_hub_healthy_and_a_missing_config_an_error(hub: HubProcess, tmp_path: Path) -> None:
    config = config_on_the_hubs_ports(hub, tmp_path / "hub.toml")
    done = run_cli(hub.state_dir, "doctor", "--config", str(config), "--json")
    report = json.loads(done.stdout)
    errors = [f for f in report["findings"] if f["level"] == "error"]
    assert (done.returncode, errors) == (0, [])
    held = [f["what"] for f in report["findings"] if "held by the running hub" in f["what"]]
    assert len(held) == 3, report
    node_id = hub.endpoints["node_id"]
    assert any(f["what"].endswith(f"node id {node_id}") for f in report["findings"] if f["level"] == "ok"), report
    assert {"level": "ok", "what": "no fleet certificate: this hub federates with nobody", "fix": ""} \
        in report["findings"]

    text = run_cli(hub.state_dir, "doctor", "--config", str(tmp_path / "missing.toml"))
    assert text.returncode == 1
    assert text.stdout.splitlines()[0].startswith("error  config")
    assert "doctor found" in text.stderr


def test_doctor_names_the_fleet_a_hub_joined_and_refuses_a_certificate_of_another_node(tmp_path: Path) -> None:
    state = tmp_path / "hub"
    config = tmp_path / "hub.toml"
    config.write_text("".join(f'[{door}]\nlisten = "127.0.0.1:0"\n' for door in ("http", "http3", "grpc"))
                      + '[p2p]\nlisten = "/ip4/127.0.0.1/tcp/0"\n[mdns]\nenabled = false\n'
                      + '[modules]\nenabled = ["echo"]\n')
    fleet = FleetKey.generate("acme")
    identity = NodeIdentity.load_or_create(state)
    install_certificate(state, fleet.sign_node(identity.public_key, "paris", now=time.time()).to_text(), identity)

    done = run_cli(state, "doctor", "--config", str(config), "--json")
    assert done.returncode == 0, done.stdout
    oks = [f["what"] for f in json.loads(done.stdout)["findings"] if f["level"] == "ok"]
    assert any(what.endswith(f"node id {identity.peer_id}") for what in oks), oks
    assert any(what.startswith(f"fleet acme ({fleet.fleet_id}): site paris, role site") for what in oks), oks
    assert "p2p /ip4/127.0.0.1/tcp/0: port 0, a free port is picked at start" in oks

    # a certificate copied from another hub: this hub's peers would refuse it, so doctor does first
    other = NodeIdentity.generate()
    (state / CERT_FILE).write_text(fleet.sign_node(other.public_key, "lyon", now=time.time()).to_text())
    text = run_cli(state, "doctor", "--config", str(config))
    assert text.returncode == 1
    assert f"is for node {other.peer_id}, not this node {identity.peer_id}" in text.stdout
