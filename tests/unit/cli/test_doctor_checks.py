"""What ``democratic-ai doctor`` finds in a state dir, a certificate, model files and a unit's score."""

from __future__ import annotations

import datetime
import hashlib
import os
from pathlib import Path

from daemon.cli.checks import (
    Finding,
    check_certificate,
    check_models,
    check_modes,
    check_port,
    check_unit_score,
    parse_security_score,
)
from daemon.runtime.tls import make_self_signed
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
