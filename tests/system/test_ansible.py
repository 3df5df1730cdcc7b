"""An operator provisions a fleet with the Ansible role in ansible/: a central billing node and a site.

The role is applied for real: ansible-playbook from the ops venv (.venv-ops) on this machine, the control
node, drives two fresh Debian trees through the ``community.general.chroot`` connection and installs the
hub's .deb in each. The fleet key is made here, each node key in its tree, the certificates signed here.
The second run of the same playbook must change nothing. Then the installed hub starts in the central tree
and answers /ready and a call made with an API key the role wrote to the control node's output dir.

The first two tests need no root: ansible-lint's production profile, and every default of the role
described in its argument specs. They skip only when the ops venv cannot be made.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import tomllib
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from federation.fleet import load_certificate
from tests.support.cli import cli_ok, run_cli
from tests.support.debian import chroot_popen, chroot_run, mounted, remove_tree, unpack_tree
from tests.support.fleet import free_port
from tests.support.hubproc import ROOT

ANSIBLE = ROOT / "ansible"
ROLE = ANSIBLE / "roles" / "democratic_ai"
OPS_BIN = ROOT / ".venv-ops" / "bin"
STATE = "/var/lib/democratic-ai"
HUB = "/opt/democratic-ai/bin/democratic-ai"
TENANT: dict[str, Any] = {"name": "city-hospital", "id": "6f1c2a4e-0b7d-4c1e-9a55-3f2d8e7b9c01", "plan": "clinic",
          "keys": [{"name": "reception", "role": "developer"}, {"name": "dashboard", "role": "viewer",
                                                                 "rate": "60/min"}]}
#: `host : ok=N changed=N unreachable=N failed=N ...` in the play recap
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@pytest.fixture(scope="session")
def ops_bin() -> Path:
    """The ops venv's bin/ (ansible-playbook, ansible-lint), made by `make ops` when absent or stale."""
    made = subprocess.run(["make", "--no-print-directory", "ops"], cwd=ROOT, capture_output=True, text=True,
                          timeout=1200, check=False)
    if made.returncode != 0:
        pytest.skip(f"the ops venv (.venv-ops, ansible/requirements.txt) cannot be made: {made.stderr[-800:]}")
    return OPS_BIN


def ops_env(ops_bin: Path, home: Path) -> dict[str, str]:
    """A clean environment for Ansible: its venv first on PATH, the repo's ansible.cfg, no colours.

    Nothing of this shell's (a pyenv PATH, pip settings) leaks through the chroot connection into the trees.
    """
    return {"PATH": f"{ops_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(home), "LANG": "C.UTF-8", "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOME": str(home / ".ansible"), "ANSIBLE_LOCAL_TEMP": str(home / "tmp")}


def yaml_as_json(ops_bin: Path, path: Path) -> Any:
    """A YAML file's data, read by the ops venv's PyYAML (the project's venv does not promise one)."""
    out = subprocess.run([str(ops_bin / "python"), "-c",
                          "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))", str(path)],
                         capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


# `make ops` on a cold cache installs Ansible (minutes): beyond the suite's 120 s
@pytest.mark.timeout(1200)
def test_the_role_passes_ansible_lint_with_the_production_profile(ops_bin: Path, tmp_path: Path) -> None:
    result = subprocess.run(["ansible-lint"], cwd=ANSIBLE, env=ops_env(ops_bin, tmp_path), capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in result.stderr + result.stdout


@pytest.mark.timeout(1200)
def test_every_default_of_the_role_is_described_in_its_argument_specs(ops_bin: Path) -> None:
    defaults = yaml_as_json(ops_bin, ROLE / "defaults" / "main.yml")
    specs = yaml_as_json(ops_bin, ROLE / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert set(defaults) == set(specs)
    for name, value in defaults.items():
        assert specs[name].get("default") == value, f"{name}: defaults/main.yml and argument_specs.yml differ"
        assert specs[name].get("description"), f"{name} has no description"


@pytest.mark.timeout(1200)
def test_the_example_inventory_parses_and_picks_the_newest_deb(ops_bin: Path, tmp_path: Path) -> None:
    env = ops_env(ops_bin, tmp_path)
    example = ANSIBLE / "inventory" / "example"
    listed = subprocess.run(["ansible-inventory", "-i", str(example), "--list"], cwd=ANSIBLE, env=env,
                            capture_output=True, text=True, timeout=300, check=True)
    hosts = json.loads(listed.stdout)
    assert {"hub-central", "hub-osaka", "hub-sapporo", "hub-fukuoka"} <= set(hosts["_meta"]["hostvars"])
    subprocess.run(["ansible-playbook", "-i", str(example), "--syntax-check", str(ANSIBLE / "playbooks" / "site.yml")],
                   cwd=ANSIBLE, env=env, capture_output=True, text=True, timeout=300, check=True)
    # the example's group_vars take the newest .deb of build/deb/ by version: 0.10.0 is newer than 0.9.0
    copy = tmp_path / "repo" / "ansible" / "inventory" / "example"
    shutil.copytree(example, copy)
    debs = tmp_path / "repo" / "build" / "deb"
    debs.mkdir(parents=True)
    for version in ("0.9.0", "0.10.0", "0.2.0"):
        (debs / f"democratic-ai_{version}_amd64.deb").touch()
    shown = subprocess.run(["ansible", "hub-central", "-i", str(copy), "-m", "ansible.builtin.debug",
                            "-a", "var=democratic_ai_deb_src"], cwd=ANSIBLE, env=env, capture_output=True,
                           text=True, timeout=300, check=True)
    assert "democratic-ai_0.10.0_amd64.deb" in shown.stdout, shown.stdout


def test_tenant_create_takes_the_plans_of_the_config_the_role_writes(tmp_path: Path) -> None:
    # the role makes tenants before the hub has ever served, so the CLI reads the plans from hub.toml
    config = tmp_path / "hub.toml"
    config.write_text('[plans.starter]\n\n[plans.clinic]\nbase_monthly = "19800"\n')
    refused = run_cli(tmp_path / "state", "tenant", "create", "city-hospital", "--plan", "clinic")
    assert refused.returncode != 0 and "clinic" in refused.stderr
    cli_ok(tmp_path / "state", "tenant", "create", "city-hospital", "--plan", "clinic", "--config", str(config),
           "--id", TENANT["id"])
    assert TENANT["id"] in cli_ok(tmp_path / "state", "tenant", "list")


def inventory(trees: Mapping[str, Path], ports: Mapping[str, Mapping[str, int]], deb: Path,
              control: Path) -> dict[str, Any]:
    """Two chroot hosts, the first the central billing node, on loopback ports free now; JSON is YAML."""
    hosts: dict[str, Any] = {}
    for name, tree in trees.items():
        hosts[name] = {"ansible_host": str(tree), "democratic_ai_central": name == "central",
                       **{f"democratic_ai_{door}_port": port for door, port in ports[name].items()}}
    return {"democratic_ai": {"hosts": hosts, "vars": {
        "ansible_connection": "community.general.chroot",
        "ansible_become": False,  # Ansible runs as root here; no sudo in a minbase tree
        "ansible_python_interpreter": "/usr/bin/python3",
        "democratic_ai_install_method": "deb",
        "democratic_ai_deb_src": str(deb),
        "democratic_ai_control_cli": str(ROOT / ".venv" / "bin" / "democratic-ai"),
        "democratic_ai_control_dir": str(control),
        "democratic_ai_fleet_name": "test-fleet",
        # both trees share this machine's network: loopback only, nothing announced on the LAN
        "democratic_ai_listen_address": "127.0.0.1",
        "democratic_ai_advertise_address": "127.0.0.1",
        "democratic_ai_mdns_enabled": False,
        "democratic_ai_modules": ["echo"],
        "democratic_ai_plans": {"starter": {}, "clinic": {"base_monthly": "19800",
                                                          "rate_limits": {"api_calls": "5000/min"}}},
        "democratic_ai_tenants": [TENANT],
    }}}


def play(env: Mapping[str, str], inventory_file: Path,
         *options: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """ansible-playbook -v of the example site playbook on ``inventory_file``; its output and seconds.

    -v prints every task's result (command output included) unless the task says no_log.
    """
    started = time.monotonic()
    result = subprocess.run(["ansible-playbook", "-v", "-i", str(inventory_file), *options,
                             str(ANSIBLE / "playbooks" / "site.yml")],
                            cwd=ANSIBLE, env=dict(env), capture_output=True, text=True, timeout=1800, check=False)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
    return result, time.monotonic() - started


def recap(output: str) -> dict[str, dict[str, int]]:
    """The play recap's counts by host."""
    return {m[1]: {"ok": int(m[2]), "changed": int(m[3]), "unreachable": int(m[4]), "failed": int(m[5])}
            for m in RECAP.finditer(output)}


def hub_cli(tree: Path, *argv: str) -> str:
    """A democratic-ai command in ``tree`` on the hub's state dir, as an operator runs it (root); its stdout."""
    return chroot_run(tree, HUB, *argv, "--state-dir", STATE).stdout


@pytest.fixture
def two_trees(debian_tarball: Path, tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A central node's and a site's fresh Debian trees, mounted; removed afterwards."""
    trees: dict[str, Path] = {}
    with ExitStack() as cleanup:
        for name in ("central", "site"):
            trees[name] = unpack_tree(debian_tarball, tmp_path / name)
            cleanup.callback(remove_tree, trees[name])  # each one, even when removing another failed
        with ExitStack() as stack:
            for tree in trees.values():
                stack.enter_context(mounted(tree))
            yield trees


# a cold session builds the .deb first (minutes); each run of the role then copies ~300 MB into each tree
@pytest.mark.timeout(2400)
def test_the_role_provisions_a_central_node_and_a_site_and_a_second_run_changes_nothing(
        ops_bin: Path, hub_deb: Path, two_trees: dict[str, Path], tmp_path: Path) -> None:
    control = tmp_path / "control"
    ports = {name: {door: free_port() for door in ("http", "http3", "grpc", "p2p")} for name in two_trees}
    inventory_file = tmp_path / "inventory.yml"
    inventory_file.write_text(json.dumps(inventory(two_trees, ports, hub_deb, control)))
    log = tmp_path / "ansible.log"
    env = {**ops_env(ops_bin, tmp_path), "ANSIBLE_LOG_PATH": str(log)}

    first, first_s = play(env, inventory_file)
    second, second_s = play(env, inventory_file)
    checked, checked_s = play(env, inventory_file, "--check", "--diff")
    print(f"\nansible: first run {first_s:.0f} s, second run {second_s:.0f} s, --check {checked_s:.0f} s")

    assert set(recap(first.stdout)) == {"central", "site"}
    assert all(counts["changed"] > 0 for counts in recap(first.stdout).values())
    again = recap(second.stdout)
    assert set(again) == {"central", "site"}
    assert all(counts["changed"] == 0 and counts["failed"] == 0 for counts in again.values()), second.stdout[-3000:]
    # a dry run of a provisioned fleet reads what it must (check_mode: false on the listings) and changes nothing
    dry = recap(checked.stdout)
    assert set(dry) == {"central", "site"}
    assert all(counts["changed"] == 0 and counts["failed"] == 0 for counts in dry.values()), checked.stdout[-3000:]

    # the fleet key stayed on the control node; both hubs hold a certificate of that one fleet
    fleet_key = control / "fleet" / "fleet.key"
    assert fleet_key.stat().st_mode & 0o777 == 0o600
    node = {name: json.loads(hub_cli(tree, "node", "id", "--json")) for name, tree in two_trees.items()}
    certs = {name: load_certificate(tree / STATE.lstrip("/") / "fleet" / "node.cert")
             for name, tree in two_trees.items()}
    assert certs["central"].fleet_id == certs["site"].fleet_id
    assert (certs["central"].role, certs["site"].role) == ("central", "site")
    assert all(certs[name].node_id == node[name]["node_id"] for name in two_trees)
    for tree in two_trees.values():
        assert not [*(tree / STATE.lstrip("/")).rglob("fleet.key"), *(tree / "etc/democratic-ai").rglob("fleet.key")]

    # what the role's commands made in the state dir belongs to the hub's user, as the unit runs it
    for tree in two_trees.values():
        uid = next(int(line.split(":")[2]) for line in (tree / "etc/passwd").read_text().splitlines()
                   if line.startswith("democratic-ai:"))
        state = (tree / STATE.lstrip("/")).resolve()
        assert state.is_relative_to(tree.resolve())
        assert {path.stat().st_uid for path in [state, *state.rglob("*")]} == {uid}

    # the site bills to the central node and dials it first
    configs = {name: tomllib.loads((tree / "etc/democratic-ai/hub.toml").read_text())
               for name, tree in two_trees.items()}
    assert configs["central"]["billing"]["role"] == "central"
    assert configs["site"]["billing"] == {"role": "site", "central": node["central"]["node_id"], "sync_interval_s": 5}
    assert configs["site"]["p2p"]["bootstrap"] == [
        f"/ip4/127.0.0.1/tcp/{ports['central']['p2p']}/p2p/{node['central']['node_id']}"]

    # the tenant, on its plan and with the same id at both, and its keys: active there, written here, never logged
    for name, tree in two_trees.items():
        tenants = re.sub(r" {2,}", "  ", hub_cli(tree, "tenant", "list"))
        assert f"{TENANT['name']}  clinic  active  {TENANT['id']}" in tenants
        listed = hub_cli(tree, "key", "list", "--tenant", TENANT["name"])
        for key in TENANT["keys"]:
            key_file = control / "keys" / name / f"{TENANT['name']}-{key['name']}.key"
            assert key_file.stat().st_mode & 0o777 == 0o600
            raw = key_file.read_text().strip()
            assert re.search(rf"^{raw[:12]}\s+{key['role']}\s+{re.escape(key.get('rate', '-'))}\s+active", listed, re.M)
            assert raw not in first.stdout + second.stdout + checked.stdout
            assert raw not in log.read_text()

    # a run limited to the site (the central node not in the play) that must renew certificates 400 days
    # ahead: the site's certificate is signed again, and it still bills to the central node it knows of
    renewed, renewed_s = play(env, inventory_file, "--limit", "site", "-e", "democratic_ai_cert_renew_days=400")
    print(f"ansible: --limit site with a renewal {renewed_s:.0f} s")
    assert set(recap(renewed.stdout)) == {"site"}
    assert recap(renewed.stdout)["site"]["changed"] > 0 and recap(renewed.stdout)["site"]["failed"] == 0
    site_cert = load_certificate(two_trees["site"] / STATE.lstrip("/") / "fleet" / "node.cert")
    assert site_cert.issued_at > certs["site"].issued_at
    assert (site_cert.fleet_id, site_cert.role, site_cert.node_id) == (
        certs["central"].fleet_id, "site", node["site"]["node_id"])
    again_site = tomllib.loads((two_trees["site"] / "etc/democratic-ai/hub.toml").read_text())
    assert again_site["billing"]["central"] == node["central"]["node_id"]

    # the installed hub starts from what the role wrote, and takes a key the role made
    central = two_trees["central"]
    log = tmp_path / "central-hub.log"
    # as root: the hub's user reaches its state dir (below /var/lib/private) only inside the unit's namespace
    hub = chroot_popen(central, HUB, "serve", "--config", "/etc/democratic-ai/hub.toml", log=log)
    try:
        base = f"http://127.0.0.1:{ports['central']['http']}"
        deadline = time.monotonic() + 90
        while True:
            assert hub.poll() is None, log.read_text()[-4000:]
            try:
                with urllib.request.urlopen(f"{base}/ready", timeout=2) as ready:
                    if ready.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
        key = (control / "keys" / "central" / f"{TENANT['name']}-reception.key").read_text().strip()
        request = urllib.request.Request(f"{base}/v1/capabilities", headers={"X-API-Key": key})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
            assert "echo" in json.dumps(json.load(answer))
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited already
            os.killpg(hub.pid, signal.SIGTERM)
        try:
            hub.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(hub.pid, signal.SIGKILL)
            hub.wait(timeout=10)
