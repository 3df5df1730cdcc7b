"""``democratic-ai doctor``: is this hub fit to serve?  One line per finding, what to do beside each.

It checks the config (loaded as ``serve`` would), each door's port (free, or held by the running
hub whose /health answers), the state dir's owner and modes, the enabled modules' model files
(sha256), the ledger's chain, the TLS certificates' expiry, the systemd unit's security score
(when ``systemd-analyze`` and the unit file are there) and federation: the node key and node id,
the fleet certificate (signed, for this node's key, not expired), ``[fleet] trusted_keys``, the
``[p2p] listen`` port and the ``[p2p] bootstrap`` addresses; and, on a hub that federates, its
links: the peers the running hub wrote to ``peers.json`` (up, or down and when they are tried
again), their clocks against this one, and the usage sync to the central billing node (a site's
outbox against its ledger; on the central node, each site's last refusal in ``central.db``).

Exit codes: 0 when nothing is an error (warnings allowed), 1 when any finding is an error, 2 for
bad input (an unknown option).  A bad config is an error finding, not exit 2: the report goes on
with the embedded defaults, so one run shows everything that is wrong.  The checks themselves are
plain functions in checks.py; this file gathers what they need from the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from daemon.cli.checks import (
    Finding,
    check_bootstrap,
    check_central_sites,
    check_certificate,
    check_clock_skew,
    check_fleet_certificate,
    check_ledger,
    check_models,
    check_modes,
    check_node_key,
    check_p2p_listen,
    check_peers,
    check_port,
    check_site_sync,
    check_trusted_keys,
    check_unit_score,
    parse_security_score,
    parse_tcp_multiaddr,
)
from daemon.cli.errors import CommandFailed
from daemon.cli.output import print_json
from daemon.cli.parsing import SubParsers, add_command
from daemon.core.errors import ConfigError
from daemon.runtime.config import HubConfig, StateConfig, parse_listen
from daemon.runtime.listen import serves_tls
from daemon.runtime.tls import default_paths

#: where the package and an operator put the unit; the first that exists is scored
UNIT_PATHS = ("/etc/systemd/system/democratic-ai.service", "/lib/systemd/system/democratic-ai.service",
              "/usr/lib/systemd/system/democratic-ai.service")
#: the package's config file, read when --config is not given and it exists
PACKAGED_CONFIG = Path("/etc/democratic-ai/hub.toml")
_PROBE_TIMEOUT_S = 3.0


def load_config(path: str | None, state_dir: str | None) -> tuple[HubConfig, Finding]:
    """The config ``serve`` would run with and a finding on it; a bad file gives the defaults and an error."""
    chosen = path if path is not None else (str(PACKAGED_CONFIG) if PACKAGED_CONFIG.is_file() else None)
    try:
        config = HubConfig.from_toml(chosen)
        finding = Finding("ok", f"config {chosen}: loaded" if chosen else "config: none given, embedded defaults")
    except ConfigError as exc:
        config = HubConfig.from_toml(None)
        finding = Finding("error", f"config {chosen}: {exc}; the other checks used the embedded defaults",
                          "fix the key it names (`democratic-ai serve` refuses this file)")
    if state_dir:
        config = config.with_overrides(state=StateConfig(dir=state_dir))
    return config, finding


def running_hub(state_dir: Path) -> tuple[set[int], bool, Finding]:
    """The ports endpoints.json names, whether that hub's /health answers, and a finding on it."""
    try:
        endpoints = json.loads((state_dir / "endpoints.json").read_text())
    except (OSError, ValueError):
        return set(), False, Finding("ok", "no hub running on this state dir (no endpoints.json)")
    ports = {int(url.rsplit(":", 1)[1]) for key in ("http", "http3", "grpc")
             if isinstance(url := endpoints.get(key), str) and url.rsplit(":", 1)[-1].isdigit()}
    url = str(endpoints.get("http", ""))
    try:
        from daemon.runtime.tls import client_context

        ca = endpoints.get("ca_file")
        context = client_context(Path(ca) if ca else None) if url.startswith("https") else None
        with urllib.request.urlopen(f"{url}/health", timeout=_PROBE_TIMEOUT_S, context=context) as resp:
            healthy = resp.status == 200
    except (OSError, ValueError):
        healthy = False
    if healthy:
        return ports, True, Finding("ok", f"hub running (pid {endpoints.get('pid')}): {url}/health answers")
    return ports, False, Finding("warn", f"endpoints.json names {url} (pid {endpoints.get('pid')}) but its /health "
                                 "does not answer", "a hub that stopped uncleanly leaves it: start the hub again")


def bind_error(host: str, port: int, *, udp: bool, reuse_addr: bool = False) -> str | None:
    """None when ``host:port`` can be bound now (it is released at once), else why not.

    ``reuse_addr`` binds as a listener that sets SO_REUSEADDR does (libp2p's): a port left in
    TIME_WAIT by the last run is free to it, a live listener still is not.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as sock:
            if reuse_addr:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def port_findings(config: HubConfig, hub_ports: set[int], hub_healthy: bool) -> list[Finding]:
    """One finding per enabled door's listen address."""
    doors = [("http", config.http.listen, False)]
    if config.http3.enabled:
        doors.append(("http3", config.http3.listen, True))
    if config.grpc.enabled:
        doors.append(("grpc", config.grpc.listen, False))
    findings = []
    for door, listen, udp in doors:
        host, port = parse_listen(listen)
        error = bind_error(host, port, udp=udp) if port else None
        findings.append(check_port(door, listen, bind_error=error, hub_ports=hub_ports, hub_healthy=hub_healthy,
                                   port=port))
    return findings


def model_findings(config: HubConfig) -> list[Finding]:
    """Each enabled module's shipped model files against their manifest."""
    from modules.model_files import ModelFile, ModelLoadError, shipped

    files: dict[str, list[ModelFile]] = {}
    missing: dict[str, str] = {}
    for module in config.modules.enabled:
        try:
            files[module] = shipped(module, config.modules.options.get(module))
        except ModelLoadError as exc:
            missing[module] = str(exc)
    return check_models(files, missing)


def certificate_findings(config: HubConfig, now: datetime.datetime) -> list[Finding]:
    """The certificates the doors that serve TLS would use: the configured ones, else the self-signed pair."""
    own, _ = default_paths(config.state_dir)
    served = []
    if config.http3.enabled:
        served.append(config.http3.certificate)
    if serves_tls(config.http):
        served.append(config.http.certificate)
    if config.grpc.enabled and serves_tls(config.grpc):
        served.append(config.grpc.certificate)
    paths = {Path(p) if p else own for p in served}
    return [check_certificate(p, now, self_signed=p == own) for p in sorted(paths)]


def hub_p2p_ports(state_dir: Path) -> set[int]:
    """The TCP ports of the p2p multiaddrs the running hub wrote to endpoints.json (none if it does not federate)."""
    try:
        addrs = json.loads((state_dir / "endpoints.json").read_text()).get("p2p") or []
    except (OSError, ValueError, AttributeError):
        return set()
    ports = set()
    for addr in addrs if isinstance(addrs, list) else []:
        try:
            ports.add(parse_tcp_multiaddr(str(addr))[1])
        except ValueError:
            continue
    return ports


def hub_federates(config: HubConfig) -> bool:
    """As the hub decides at start: a certificate file (good or not: a bad one stops it) or trusted keys."""
    from federation.fleet import cert_path_of

    return cert_path_of(config.state_dir, config.fleet.cert).exists() or bool(config.fleet.trusted_keys)


def hub_alive(state_dir: Path) -> bool:
    """Whether endpoints.json names a process that still exists (a hub whose /health may not answer)."""
    try:
        pid = json.loads((state_dir / "endpoints.json").read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return False
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:  # another user's process: it exists
        return True
    except OSError:
        return False
    return True


def read_peers(state_dir: Path) -> tuple[list[dict[str, Any]] | None, Finding | None]:
    """The peers the running hub last wrote (None when there is no peers.json), or a finding on a bad file."""
    from daemon.cli.peers import PEERS_FILE

    path = state_dir / PEERS_FILE
    try:
        peers = json.loads(path.read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, Finding("warn", f"{path} cannot be read ({exc})", "the running hub rewrites it within an "
                             "advert interval; look again")
    if not isinstance(peers, list) or not all(isinstance(peer, dict) for peer in peers):
        return None, Finding("warn", f"{path} is not a list of peers", "the running hub rewrites it within an "
                             "advert interval; look again")
    return peers, None


def link_findings(config: HubConfig, hub_running: bool, now: float) -> list[Finding]:
    """On a hub that federates: its peers and their clocks, and its link to the central billing node."""
    if not hub_federates(config):
        return []
    findings = []
    if config.p2p.enabled:
        # a stopped hub removes peers.json; one that stopped uncleanly may leave it, out of date
        peers, bad = read_peers(config.state_dir) if hub_running else (None, None)
        if bad is not None:
            findings.append(bad)
        else:
            findings += check_peers(peers, hub_running=hub_running, bootstrap=bool(config.p2p.bootstrap))
            findings += check_clock_skew(peers or [])
    billing = config.billing
    if billing.role == "central":
        findings += central_findings(config.state_dir, now)
    elif billing.role == "site" and billing.central:
        findings.append(site_sync_finding(config.state_dir, billing.central, now))
    return findings


def site_sync_finding(state_dir: Path, central: str, now: float) -> Finding:
    """This site's outbox (what the centre acknowledged, the last error) against its ledger's head."""
    import sqlite3

    from daemon.metering.ledger.reader import ledger_head, rows_after
    from daemon.metering.ledger.writer import LEDGER_FILE
    from federation.sync.outbox import OUTBOX_FILE, SyncState, SyncStateError

    try:  # absent on a site that never synced: nothing acknowledged
        state = SyncState.load(state_dir / OUTBOX_FILE)
    except SyncStateError as exc:
        return Finding("error", f"usage sync: {exc}", f"remove {state_dir / OUTBOX_FILE}: the hub sends the ledger "
                       "again from the start and the central node acknowledges what it holds")
    ledger = state_dir / LEDGER_FILE
    try:
        head = ledger_head(ledger)[0]
        oldest = rows_after(ledger, state.acked_seq, 1) if head > state.acked_seq else []
    except sqlite3.Error as exc:
        return Finding("error", f"usage sync: ledger {ledger} cannot be read ({exc})",
                       "see the ledger finding above")
    return check_site_sync(central, state, head, oldest[0].ts_us if oldest else 0, now)


def central_findings(state_dir: Path, now: float) -> list[Finding]:
    """The central billing node: the sites central.db holds and the last refusal of each (read-only)."""
    import sqlite3

    from daemon.metering.central import CENTRAL_FILE, CentralReader

    path = state_dir / CENTRAL_FILE
    if not path.is_file():
        return [Finding("ok", f"central billing: no {path} yet (the hub makes it at start)")]
    try:
        sites = CentralReader(path, clock=lambda: now).sites()
    except sqlite3.Error as exc:
        return [Finding("error", f"central billing: {path} cannot be read ({exc})",
                        "stop the hub and restore the last good backup (democratic-ai restore)")]
    return check_central_sites(sites, now)


def fleet_findings(config: HubConfig, hub_healthy: bool, now: float) -> list[Finding]:
    """The node key and id, the fleet certificate, trusted keys, the p2p port and the bootstrap addresses."""
    from federation.fleet import cert_path_of
    from federation.identity import NODE_KEY_FILE

    state_dir = config.state_dir
    key_finding, identity = check_node_key(state_dir / NODE_KEY_FILE)
    cert_path = cert_path_of(state_dir, config.fleet.cert)
    federates = hub_federates(config)
    listen = config.p2p.listen
    error = None
    if config.p2p.enabled and federates:
        try:
            host, port, _ = parse_tcp_multiaddr(listen)
        except ValueError:
            pass  # check_p2p_listen says what is wrong with it
        else:
            error = bind_error(host, port, udp=False, reuse_addr=True) if port else None
    return [
        key_finding,
        check_fleet_certificate(cert_path, identity, now, configured=bool(config.fleet.cert),
                                trusted_keys=bool(config.fleet.trusted_keys)),
        *check_trusted_keys(config.fleet.trusted_keys),
        check_p2p_listen(listen, enabled=config.p2p.enabled, federates=federates, bind_error=error,
                         hub_ports=hub_p2p_ports(state_dir), hub_healthy=hub_healthy),
        *check_bootstrap(config.p2p.bootstrap, identity.peer_id if identity is not None else None),
    ]


def unit_finding(unit: str | None) -> Finding:
    """The unit's ``systemd-analyze security --offline=yes`` score, or why it was not scored."""
    analyze = shutil.which("systemd-analyze")
    path = Path(unit) if unit else next((Path(p) for p in UNIT_PATHS if Path(p).is_file()), None)
    if analyze is None:
        return Finding("ok", "unit score: not checked (systemd-analyze is not installed)")
    if path is None or not path.is_file():
        where = unit or ", ".join(UNIT_PATHS)
        return Finding("ok", f"unit score: not checked (no unit file at {where})")
    try:
        done = subprocess.run([analyze, "security", "--offline=yes", str(path)], capture_output=True, text=True,
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Finding("warn", f"unit {path}: systemd-analyze did not run ({exc})", "run it by hand")
    output = done.stdout + done.stderr
    return check_unit_score(path, parse_security_score(output), output)


def run_checks(args: argparse.Namespace) -> list[Finding]:
    """Every check, in the order an operator would fix them."""
    from daemon.metering.ledger.chain import verify
    from daemon.metering.ledger.writer import LEDGER_FILE

    config, config_finding = load_config(args.config, args.state_dir)
    state_dir = config.state_dir
    hub_ports, healthy, hub_finding = running_hub(state_dir)
    ledger = state_dir / LEDGER_FILE
    now = time.time()
    return [
        config_finding,
        hub_finding,
        *port_findings(config, hub_ports, healthy),
        *check_modes(state_dir, euid=os.geteuid()),
        *model_findings(config),
        check_ledger(verify(ledger), ledger),
        *certificate_findings(config, datetime.datetime.now(datetime.UTC)),
        unit_finding(args.unit),
        *fleet_findings(config, healthy, now),
        *link_findings(config, healthy or hub_alive(state_dir), now),
    ]


def cmd_doctor(args: argparse.Namespace) -> int:
    """Print every finding (a line each, or ``--json``); exit 1 when any is an error."""
    findings = run_checks(args)
    errors = sum(1 for f in findings if f.level == "error")
    if args.json:
        print_json({"ok": errors == 0, "findings": [f.to_dict() for f in findings]})
    else:
        for finding in findings:
            print(finding.line())
    if errors:
        raise CommandFailed(f"doctor found {errors} error(s)")
    return 0


def register(subparsers: SubParsers, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``doctor``."""
    doctor = add_command(subparsers, "doctor", parents, "check this hub's config, ports, files, models, "
                         "ledger, certificates, unit, fleet membership, peers, clock skew and the usage sync; "
                         "exit 1 on any error", cmd_doctor)
    doctor.add_argument("--config", help=f"TOML config file (default: {PACKAGED_CONFIG} if it exists, "
                        "else the embedded defaults)")
    doctor.add_argument("--unit", help="the systemd unit file to score (default: the installed one)")
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
