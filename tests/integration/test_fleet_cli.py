"""An operator builds a fleet from the command line: ``fleet init``, ``node id``, ``fleet sign``, ``fleet join``."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from federation.fleet import CERT_FILE, NodeCertificate
from federation.identity import NODE_KEY_FILE
from tests.support.cli import cli_ok, run_cli


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_operator_makes_a_fleet_and_a_hub_joins_it(tmp_path: Path) -> None:
    operator, hub = tmp_path / "operator", tmp_path / "hub"

    fleet_id = cli_ok(operator, "fleet", "init", "--out", str(operator / "acme"), "--name", "acme")
    assert fleet_id.startswith("fleet-")
    assert mode(operator / "acme" / "fleet.key") == 0o600
    assert json.loads((operator / "acme" / "fleet.pub").read_text())["fleet_id"] == fleet_id

    node = json.loads(cli_ok(hub, "node", "id", "--json"))
    assert node["node_id"].startswith("12D3KooW") and len(node["public_key"]) == 44
    assert mode(hub / NODE_KEY_FILE) == 0o600
    assert node["node_id"] in cli_ok(hub, "node", "id")  # the plain form names it too

    cert_file = operator / "paris.cert"
    cli_ok(operator, "fleet", "sign", "--fleet-key", str(operator / "acme" / "fleet.key"),
           "--node", node["public_key"], "--name", "paris", "--role", "central", "--days", "30",
           "--out", str(cert_file))
    cert = NodeCertificate.from_text(cert_file.read_text())
    assert (cert.node_id, cert.site, cert.role, cert.fleet_id) == (node["node_id"], "paris", "central", fleet_id)

    assert cli_ok(hub, "fleet", "join", "--cert", str(cert_file)) == fleet_id
    installed = hub / CERT_FILE
    assert NodeCertificate.from_text(installed.read_text()) == cert
    assert mode(installed) == 0o600 and mode(installed.parent) == 0o700

    assert json.loads(cli_ok(hub, "node", "id", "--json")) == node  # joining never changes the node key


def test_bad_input_exits_2_with_a_message_and_changes_nothing(tmp_path: Path) -> None:
    fleet_key = tmp_path / "fleet" / "fleet.key"
    cli_ok(tmp_path, "fleet", "init", "--out", str(fleet_key.parent))
    key_before = fleet_key.read_bytes()
    hub, other = tmp_path / "hub", tmp_path / "other"
    pub = json.loads(cli_ok(hub, "node", "id", "--json"))["public_key"]
    other_id = json.loads(cli_ok(other, "node", "id", "--json"))["node_id"]

    def refused(state_dir: Path, *args: str, says: str) -> None:
        done = run_cli(state_dir, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("democratic-ai: ") and says in done.stderr, done.stderr
        assert "Traceback" not in done.stderr

    sign = ("fleet", "sign", "--name", "paris", "--out", str(tmp_path / "x.cert"))
    refused(tmp_path, *sign, "--fleet-key", str(tmp_path / "missing.key"), "--node", pub, says="no fleet key")
    refused(tmp_path, *sign, "--fleet-key", str(tmp_path / "fleet" / "fleet.pub"), "--node", pub,
            says="not a fleet key")
    refused(tmp_path, *sign, "--fleet-key", str(fleet_key), "--node", "nonsense", says="nonsense")
    refused(tmp_path, *sign, "--fleet-key", str(fleet_key), "--node", pub, "--days", "0", says="--days")
    refused(tmp_path, "fleet", "init", "--out", str(fleet_key.parent), says="never overwritten")
    assert fleet_key.read_bytes() == key_before
    assert not (tmp_path / "x.cert").exists()

    # a node named by its node id rather than its key: the same certificate, for the other hub
    cli_ok(tmp_path, "fleet", "sign", "--fleet-key", str(fleet_key), "--node", other_id, "--name", "lyon",
           "--out", str(tmp_path / "lyon.cert"))
    assert NodeCertificate.from_text((tmp_path / "lyon.cert").read_text()).node_id == other_id
    refused(hub, "fleet", "join", "--cert", str(tmp_path / "lyon.cert"), says="not this node")
    (tmp_path / "garbage.cert").write_text("hello, I am a certificate\n")
    refused(hub, "fleet", "join", "--cert", str(tmp_path / "garbage.cert"), says="not a node certificate")
    refused(hub, "fleet", "join", "--cert", str(tmp_path / "missing.cert"), says="cannot read")
    assert not (hub / CERT_FILE).exists()
