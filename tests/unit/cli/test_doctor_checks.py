"""What ``democratic-ai doctor`` finds in a state dir, a certificate, model files, a unit's score and a fleet."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from daemon.cli.checks import (
    Finding,
    check_bootstrap,
    check_central_sites,
    check_certificate,
    check_clock_skew,
    check_fleet_certificate,
    check_models,
    check_modes,
    check_node_key,
    check_p2p_listen,
    check_peers,
    check_port,
    check_trusted_keys,
    check_unit_score,
    parse_security_score,
    parse_tcp_multiaddr,
)
from daemon.cli.doctor import central_findings, site_sync_finding
from daemon.metering.central import CENTRAL_FILE, CentralLedger
from daemon.metering.ledger.events import UsageEvent
from daemon.metering.ledger.reader import rows_after
from daemon.metering.ledger.writer import LEDGER_FILE, UsageLedger
from daemon.runtime.tls import make_self_signed
from federation.fleet import CERT_FILE, FleetKey, install_certificate
from federation.identity import NODE_KEY_FILE, NodeIdentity
from federation.sealing import MAX_SKEW_S
from federation.sync.outbox import OUTBOX_FILE, SyncState
from modules.model_files import ModelFile

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)


def state_dir(tmp_path: Path, dir_mode: int = 0o700, secret_mode: int = 0o600) -> Path:
    state = tmp_path / "state"
    (state / "tls").mkdir(parents=True)
    for name in ("jwt.secret", "bootstrap-admin.key", "tenancy.db", "ledger.db", "tls/http3-key.pem"):
        (state / name).write_bytes(b"x")
        (state / name).chmod(secret_mode)
    state.chmod(dir_mode)
    return state


def levels(findings: list[Finding]) -> list[str]:
    return [f.level for f in findings]


def test_a_state_dir_locked_to_its_owner_is_ok(tmp_path: Path) -> None:
    findings = check_modes(state_dir(tmp_path), euid=os.geteuid())
    assert levels(findings) == ["ok"]


def test_an_open_state_dir_and_readable_secrets_are_errors_that_say_what_to_chmod(tmp_path: Path) -> None:
    state = state_dir(tmp_path, dir_mode=0o755, secret_mode=0o644)
    findings = check_modes(state, euid=os.geteuid())
    assert set(levels(findings)) == {"error"}
    fixes = {f.fix for f in findings}
    assert f"chmod 700 {state}" in fixes
    assert f"chmod 600 {state / 'jwt.secret'}" in fixes and f"chmod 600 {state / 'tls/http3-key.pem'}" in fixes


def test_a_readable_secret_behind_a_closed_dir_is_a_warning(tmp_path: Path) -> None:
    state = state_dir(tmp_path, secret_mode=0o600)
    (state / "ledger.db").chmod(0o644)
    findings = check_modes(state, euid=os.geteuid())
    assert [(f.level, f.fix) for f in findings] == [("warn", f"chmod 600 {state / 'ledger.db'}")]


def test_a_state_dir_of_another_user_is_named(tmp_path: Path) -> None:
    findings = check_modes(state_dir(tmp_path), euid=os.geteuid() + 1)
    assert levels(findings) == ["warn"] and "owned by uid" in findings[0].what


def test_an_expired_certificate_is_an_error_and_one_ending_soon_a_warning(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed(cert, key, now=NOW - datetime.timedelta(days=400))  # valid 365 days: ended 35 days ago
    expired = check_certificate(cert, NOW, self_signed=False)
    assert expired.level == "error" and "expired on" in expired.what and "renew it" in expired.fix
    ending = check_certificate(cert, NOW - datetime.timedelta(days=40), self_signed=True)
    assert ending.level == "warn" and "restart the hub" in ending.fix
    assert check_certificate(cert, NOW - datetime.timedelta(days=300), self_signed=False).level == "ok"


def test_a_self_signed_certificate_not_made_yet_is_fine_and_a_missing_operator_one_is_not(tmp_path: Path) -> None:
    assert check_certificate(tmp_path / "none.pem", NOW, self_signed=True).level == "ok"
    assert check_certificate(tmp_path / "none.pem", NOW, self_signed=False).level == "error"


def test_a_tampered_model_file_is_found_and_named(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    good.write_bytes(b"weights")
    bad.write_bytes(b"weights, then changed")
    sha = hashlib.sha256(b"weights").hexdigest()
    findings = check_models({"audio.vad": [ModelFile(good, sha), ModelFile(bad, sha)]}, {})
    assert levels(findings) == ["error"]
    assert str(bad) in findings[0].what and "manifest expects" in findings[0].what
    assert levels(check_models({"audio.vad": [ModelFile(good, sha)]}, {})) == ["ok"]


def test_model_problems_of_a_module_that_runs_without_them_are_warnings(tmp_path: Path) -> None:
    findings = check_models({"text.summarize": [ModelFile(tmp_path / "absent", "0" * 64)]},
                            {"image.ocr": "package 'rapidocr_onnxruntime' is not installed"})
    assert [(f.level, f.what.split(":")[0]) for f in findings] == [("error", "module image.ocr"),
                                                                   ("warn", "module text.summarize")]


def test_a_port_held_by_the_running_hub_is_ok_and_one_held_by_another_process_is_an_error() -> None:
    held = check_port("http", "0.0.0.0:8080", bind_error="Address already in use", hub_ports={8080},
                      hub_healthy=True, port=8080)
    assert held.level == "ok" and "running hub" in held.what
    other = check_port("http", "0.0.0.0:8080", bind_error="Address already in use", hub_ports=set(),
                       hub_healthy=False, port=8080)
    assert other.level == "error" and "ss -ltnup" in other.fix
    assert check_port("grpc", "127.0.0.1:50051", bind_error=None, hub_ports=set(), hub_healthy=False,
                      port=50051).level == "ok"


def test_the_units_score_is_read_from_systemd_analyze_and_judged_against_2() -> None:
    output = "  NAME  DESCRIPTION  EXPOSURE\n→ Overall exposure level for democratic-ai.service: 8.3 EXPOSED 🙁\n"
    assert parse_security_score(output) == 8.3
    unit = Path("/etc/systemd/system/democratic-ai.service")
    assert check_unit_score(unit, 8.3, output).level == "warn"
    assert check_unit_score(unit, 1.1, output).level == "ok"
    assert check_unit_score(unit, None, "Failed to parse").level == "warn"


# -- the fleet: node key, certificate, trusted keys, p2p ------------------------------------------
DAY = 86400.0
FLEET_NOW = NOW.timestamp()


def joined(state: Path, fleet: FleetKey, *, site: str = "paris", days: int = 365, issued: float = FLEET_NOW,
           identity: NodeIdentity | None = None) -> NodeIdentity:
    """A hub's state dir holding its node key and a certificate ``fleet join`` installed."""
    identity = identity or NodeIdentity.load_or_create(state)
    cert = fleet.sign_node(identity.public_key, site, days=days, now=issued)
    install_certificate(state, cert.to_text(), identity)
    return identity


def test_a_hub_without_a_certificate_federates_with_nobody_and_that_is_fine(tmp_path: Path) -> None:
    identity = NodeIdentity.load_or_create(tmp_path)
    key, loaded = check_node_key(tmp_path / NODE_KEY_FILE)
    assert key.level == "ok" and identity.peer_id in key.what and loaded == identity
    cert = check_fleet_certificate(tmp_path / CERT_FILE, identity, FLEET_NOW)
    assert (cert.level, cert.what) == ("ok", "no fleet certificate: this hub federates with nobody")
    keys_only = check_fleet_certificate(tmp_path / CERT_FILE, identity, FLEET_NOW, trusted_keys=True)
    assert keys_only.level == "ok" and "trusted_keys" in keys_only.what
    # named in [fleet] cert but missing: the operator meant to join a fleet
    named = check_fleet_certificate(tmp_path / "elsewhere.cert", identity, FLEET_NOW, configured=True)
    assert named.level == "warn" and "fleet join" in named.fix


def test_a_valid_certificate_names_the_fleet_site_role_and_end(tmp_path: Path) -> None:
    fleet = FleetKey.generate("acme")
    identity = joined(tmp_path, fleet, site="lyon")
    found = check_fleet_certificate(tmp_path / CERT_FILE, identity, FLEET_NOW + DAY)
    assert found.level == "ok", found
    assert f"fleet acme ({fleet.fleet_id})" in found.what
    assert "site lyon" in found.what and "role site" in found.what and "valid until 2027-06-01" in found.what


def test_a_certificate_of_another_node_is_an_error_naming_both_nodes(tmp_path: Path) -> None:
    fleet = FleetKey.generate("acme")
    identity = NodeIdentity.load_or_create(tmp_path)
    other = NodeIdentity.generate()
    # copied from another hub by hand (``fleet join`` would have refused it)
    path = tmp_path / CERT_FILE
    path.parent.mkdir(mode=0o700)
    path.write_text(fleet.sign_node(other.public_key, "lyon", now=FLEET_NOW).to_text())
    found = check_fleet_certificate(path, identity, FLEET_NOW)
    assert found.level == "error"
    assert f"for node {other.peer_id}, not this node {identity.peer_id}" in found.what
    assert "node id" in found.fix
    # a certificate with no usable node key beside it cannot be this hub's either
    assert check_fleet_certificate(path, None, FLEET_NOW).level == "error"


def test_an_expired_certificate_is_an_error_and_one_ending_within_30_days_a_warning(tmp_path: Path) -> None:
    fleet = FleetKey.generate("acme")
    joined(tmp_path, fleet, days=365, issued=FLEET_NOW - 400 * DAY)
    identity = NodeIdentity.load_or_create(tmp_path)
    expired = check_fleet_certificate(tmp_path / CERT_FILE, identity, FLEET_NOW)
    assert expired.level == "error" and "expired on 2026-04-27" in expired.what and "fleet sign" in expired.fix
    ending = check_fleet_certificate(tmp_path / CERT_FILE, identity, FLEET_NOW - 50 * DAY)
    assert ending.level == "warn" and "in 15 days" in ending.what
    early = check_fleet_certificate(tmp_path / CERT_FILE, identity, FLEET_NOW - 401 * DAY)
    assert early.level == "error" and "clock" in early.what


def test_a_tampered_or_garbage_certificate_is_an_error(tmp_path: Path) -> None:
    fleet = FleetKey.generate("acme")
    identity = joined(tmp_path, fleet)
    path = tmp_path / CERT_FILE
    text = path.read_text()
    # the same certificate with its site changed and the fleet's signature kept
    cert = fleet.sign_node(identity.public_key, "paris", now=FLEET_NOW)
    forged = type(cert)(cert.fleet_public_key, cert.fleet_id, cert.fleet_name, cert.node_public_key, "rome",
                        cert.role, cert.issued_at, cert.expires_at, cert.signature)
    path.write_text(forged.to_text())
    bad = check_fleet_certificate(path, identity, FLEET_NOW)
    assert bad.level == "error" and "signature" in bad.what
    path.write_text(text[:40])  # cut short
    cut = check_fleet_certificate(path, identity, FLEET_NOW)
    assert cut.level == "error" and "not a node certificate" in cut.what


def test_a_node_key_absent_is_a_warning_and_open_or_corrupt_an_error(tmp_path: Path) -> None:
    path = tmp_path / NODE_KEY_FILE
    absent, none = check_node_key(path)
    assert absent.level == "warn" and "first start" in absent.fix and none is None
    identity = NodeIdentity.load_or_create(tmp_path)
    path.chmod(0o644)
    open_key, loaded = check_node_key(path)
    assert (open_key.level, open_key.fix) == ("error", f"chmod 600 {path}") and loaded == identity
    path.write_bytes(b"short")
    path.chmod(0o600)
    corrupt, none = check_node_key(path)
    assert corrupt.level == "error" and "5 bytes" in corrupt.what and none is None


def test_trusted_keys_are_node_keys_or_ids_and_a_bad_one_is_named() -> None:
    identity = NodeIdentity.generate()
    assert check_trusted_keys([]) == []
    assert [f.level for f in check_trusted_keys([identity.public_key_b64, identity.peer_id])] == ["ok"]
    bad = check_trusted_keys([identity.peer_id, "not-a-key"])
    assert [(f.level, f.what.split(":")[0]) for f in bad] == [("error", "[fleet] trusted_keys[1]")]


def test_p2p_listen_is_checked_only_when_the_hub_would_federate() -> None:
    def p2p(listen: str, federates: bool = True, bind_error: str | None = None,
            hub: frozenset[int] = frozenset()) -> Finding:
        return check_p2p_listen(listen, enabled=True, federates=federates, bind_error=bind_error, hub_ports=set(hub),
                                hub_healthy=True)

    assert p2p("/ip4/0.0.0.0/tcp/4701").level == "ok"
    assert p2p("/ip4/0.0.0.0/tcp/4701", bind_error="Address already in use", hub=frozenset({4701})).level == "ok"
    taken = p2p("/ip4/0.0.0.0/tcp/4701", bind_error="Address already in use")
    assert taken.level == "error" and "ss -ltnup" in taken.fix
    assert p2p("/ip4/0.0.0.0/tcp/4701", federates=False, bind_error="Address already in use").level == "ok"
    assert p2p("/ip4/localhost/tcp/4701").level == "error"
    assert p2p("/ip4/localhost/tcp/4701", federates=False).level == "warn"
    off = check_p2p_listen("junk", enabled=False, federates=True, bind_error=None, hub_ports=set(),
                           hub_healthy=False)
    assert off.level == "ok" and "off" in off.what


def test_bootstrap_addresses_must_end_in_a_node_id() -> None:
    me, peer = NodeIdentity.generate(), NodeIdentity.generate()
    good = [f"/ip4/192.0.2.10/tcp/4701/p2p/{peer.peer_id}", f"/dns4/hub.example/tcp/4701/p2p/{peer.peer_id}"]
    assert [f.level for f in check_bootstrap(good, me.peer_id)] == ["ok"]
    assert check_bootstrap([], me.peer_id) == []
    found = check_bootstrap([
        "/ip4/192.0.2.10/tcp/4701",
        "/ip4/192.0.2.10/tcp/99999/p2p/" + peer.peer_id,
        "/ip4/192.0.2.10/tcp/4701/p2p/QmNotAnEd25519Key",
        f"/ip4/127.0.0.1/tcp/4701/p2p/{me.peer_id}",
    ], me.peer_id)
    assert [(f.level, f.what.split(" ")[1]) for f in found] == [
        ("error", "bootstrap[0]"), ("error", "bootstrap[1]"), ("error", "bootstrap[2]"), ("warn", "bootstrap[3]")]


@pytest.mark.parametrize(("text", "parsed"), [
    ("/ip4/127.0.0.1/tcp/4701", ("127.0.0.1", 4701, "")),
    ("/ip6/::1/tcp/0", ("::1", 0, "")),
])
def test_listen_multiaddrs_are_parsed_without_libp2p(text: str, parsed: tuple[str, int, str]) -> None:
    assert parse_tcp_multiaddr(text) == parsed


@pytest.mark.parametrize("text", ["", "/ip4/127.0.0.1", "/ip4/::1/tcp/1", "/ip4/1.2.3.4/udp/1",
                                  "/dns4/hub.example/tcp/1", "/ip4/1.2.3.4/tcp/-1", "ip4/1.2.3.4/tcp/1/x/y"])
def test_bad_listen_multiaddrs_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_tcp_multiaddr(text)


# -- links: peers, clock skew, the usage sync -------------------------------------------------------

SITE_TENANT = "6f1c1c52-5d1e-4c55-9a43-3f0c4b1d2e10"
CENTRAL_ID = "12D3KooWGzBvGkQ5cQ8iX1b2m3N4p5Q6r7S8t9U1v2W3x4Y5z6Aa"
PARIS_ID = "12D3KooWFyAuFjP4bP7hW0a1l2M3o4P5q6R7s8T9u1V2w3X4y5Zz"
LYON_ID = "12D3KooWHaCwHmR6dR9jY2c3n4P5q6R7s8T9u1V2w3X4y5Z6a7Bb"
T0 = datetime.datetime(2026, 3, 10, 12, tzinfo=datetime.UTC).timestamp()  # when the site's calls were made


def peer(site: str, state: str = "up", rtt_ms: float | None = 12.0, skew: float | None = None,
         retry_in_s: float | None = None) -> dict[str, Any]:
    """One entry of peers.json as the running hub writes it (Federation.views)."""
    return {"node_id": f"12D3KooW{site}", "site": site, "addrs": ["/ip4/192.0.2.1/tcp/4701"], "state": state,
            "rtt_ms": rtt_ms, "advert_age_s": 1.0, "load": 0.1, "free_slots": 4, "capabilities": ["echo"],
            "retry_in_s": retry_in_s, "clock_skew_s": skew}


def site_ledger(state: Path, n: int, ts: float = T0) -> None:
    """A real ledger of ``n`` calls made at ``ts``, written by the hub's writer."""
    async def write() -> None:
        async with UsageLedger(state / LEDGER_FILE) as ledger:
            for _ in range(n):
                await ledger.append(UsageEvent(tenant_id=SITE_TENANT, subject="key:abc", action="echo",
                                               module="echo", plan="starter", ts=ts))

    state.mkdir(mode=0o700, exist_ok=True)
    asyncio.run(write())


def test_peers_all_up_are_one_ok_line_with_their_round_trips() -> None:
    findings = check_peers([peer("lyon", rtt_ms=8.4), peer("nice", rtt_ms=None)], hub_running=True, bootstrap=True)
    assert [(f.level, f.what) for f in findings] == [("ok", "2 peer(s) up: lyon (8 ms), nice (rtt not measured)")]


def test_a_peer_down_is_a_warning_naming_its_site_and_its_retry() -> None:
    findings = check_peers([peer("lyon"), peer("nice", state="down", retry_in_s=16.2)], hub_running=True,
                           bootstrap=False)
    assert levels(findings) == ["warn", "ok"]
    assert "peer nice" in findings[0].what and "again in 16 s" in findings[0].what and "nice" in findings[0].fix
    assert findings[1].what == "1 peer(s) up: lyon (12 ms)"


def test_no_peer_is_a_warning_only_when_bootstrap_names_some_and_unknown_while_the_hub_is_stopped() -> None:
    assert levels(check_peers(None, hub_running=True, bootstrap=True)) == ["warn"]
    assert "no peer linked yet" in check_peers([], hub_running=True, bootstrap=True)[0].what
    assert levels(check_peers(None, hub_running=True, bootstrap=False)) == ["ok"]
    stopped = check_peers([peer("lyon", state="down")], hub_running=False, bootstrap=True)
    assert levels(stopped) == ["ok"] and "unknown" in stopped[0].what


def test_clock_skew_past_5_s_is_a_warning_and_past_the_sealing_window_an_error() -> None:
    assert check_clock_skew([peer("lyon", skew=1.5), peer("nice", skew=-2.5), peer("caen")]) == [
        Finding("ok", "clock skew: at most 2.5 s (nice) across 2 peer(s)")]
    warned = check_clock_skew([peer("lyon", skew=-10.0)])
    assert levels(warned) == ["warn"] and "10.0 s behind" in warned[0].what and "lyon" in warned[0].fix
    refused = check_clock_skew([peer("lyon", skew=1.0), peer("nice", skew=45.0)])
    assert levels(refused) == ["error"]
    assert f"beyond {MAX_SKEW_S:g} s are refused" in refused[0].what and "45.0 s ahead" in refused[0].what
    assert refused[0].fix.startswith("fix NTP on this hub or nice")
    assert check_clock_skew([]) == []


def test_a_site_whose_sync_failed_just_now_is_an_error_with_the_message(tmp_path: Path) -> None:
    state = tmp_path / "site"
    site_ledger(state, 3)
    SyncState(acked_seq=1, head_seq=3, last_error="central node refused: gap at seq 2", central=CENTRAL_ID,
              error_at=T0 + 30).save(state / OUTBOX_FILE)
    finding = site_sync_finding(state, CENTRAL_ID, T0 + 60)
    assert finding.level == "error"
    assert finding.what == f"central {CENTRAL_ID}: sync failing, 2 event(s) not acknowledged: central node " \
        "refused: gap at seq 2"
    stale = site_sync_finding(state, CENTRAL_ID, T0 + 3600)  # not retried for an hour: the hub is not running
    assert stale.level == "warn" and "not retried" in stale.what


def test_a_site_caught_up_is_ok_and_one_behind_for_long_a_warning(tmp_path: Path) -> None:
    state = tmp_path / "site"
    assert site_sync_finding(state, CENTRAL_ID, T0) == Finding("ok", f"central {CENTRAL_ID}: acked seq 0, lag 0")
    site_ledger(state, 3)
    SyncState(acked_seq=3, acked_at=T0, head_seq=3, central=CENTRAL_ID).save(state / OUTBOX_FILE)
    assert site_sync_finding(state, CENTRAL_ID, T0 + 60) == Finding("ok", f"central {CENTRAL_ID}: acked seq 3, "
                                                                    "lag 0")
    site_ledger(state, 2, ts=T0 + 100)  # two rows the centre has not acknowledged, made at T0 + 100
    assert site_sync_finding(state, CENTRAL_ID, T0 + 160).level == "ok"  # a minute behind: on its way
    behind = site_sync_finding(state, CENTRAL_ID, T0 + 100 + 600)
    assert behind.level == "warn" and "2 event(s) not acknowledged, the oldest from 10 min ago" in behind.what
    (state / OUTBOX_FILE).write_text("not json")
    assert site_sync_finding(state, CENTRAL_ID, T0).level == "error"


def test_the_central_node_counts_its_sites_and_warns_of_one_whose_batches_fail(tmp_path: Path) -> None:
    site, central = tmp_path / "paris", tmp_path / "central"
    assert levels(central_findings(central, T0)) == ["ok"]  # no central.db yet
    site_ledger(site, 2)
    central.mkdir()
    ledger = CentralLedger(central / CENTRAL_FILE, clock=lambda: T0 + 10)
    try:
        ledger.ingest(PARIS_ID, "paris", rows_after(site / LEDGER_FILE, 0, 10))
        ledger.record_error(LYON_ID, "row 5 differs from the one held")
    finally:
        ledger.close()
    findings = central_findings(central, T0 + 70)
    assert levels(findings) == ["ok", "warn"]
    assert findings[0].what == "central billing: 2 site(s) in central.db"
    assert LYON_ID in findings[1].what and "60 s ago" in findings[1].what
    assert "row 5 differs from the one held" in findings[1].what
    assert check_central_sites([], T0) == [Finding("ok", "central billing: 0 site(s) in central.db (none has "
                                                   "synced yet)")]
