"""``democratic-ai doctor`` beside a serving hub: its ports are the hub's, not a conflict; no config, an error."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert any("no peers configured" in f["what"] for f in report["findings"])

    text = run_cli(hub.state_dir, "doctor", "--config", str(tmp_path / "missing.toml"))
    assert text.returncode == 1
    assert text.stdout.splitlines()[0].startswith("error  config")
    assert "doctor found" in text.stderr
