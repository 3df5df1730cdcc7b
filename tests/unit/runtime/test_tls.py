"""The hub's self-signed certificate: a leaf, valid a year, made again at start when it nears its end."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509

from daemon.core.errors import ConfigError
from daemon.runtime.tls import RENEW_BEFORE, VALIDITY, default_paths, ensure_pair, make_self_signed

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)


def _cert(state_dir: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(default_paths(state_dir)[0].read_bytes())


def _names(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {*san.get_values_for_type(x509.DNSName), *(str(a) for a in san.get_values_for_type(x509.IPAddress))}


def test_the_self_signed_certificate_is_a_leaf_that_cannot_sign_for_other_names(tmp_path: Path) -> None:
    ensure_pair(tmp_path, now=NOW)
    constraints = _cert(tmp_path).extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is False


def test_it_is_valid_for_a_year_and_names_loopback(tmp_path: Path) -> None:
    ensure_pair(tmp_path, host="192.168.1.20", now=NOW)
    cert = _cert(tmp_path)
    assert cert.not_valid_after_utc == NOW + VALIDITY
    assert {"localhost", "127.0.0.1", "::1", "192.168.1.20"} <= _names(cert)


def test_a_certificate_with_time_left_is_kept(tmp_path: Path) -> None:
    ensure_pair(tmp_path, now=NOW)
    first = _cert(tmp_path).serial_number
    ensure_pair(tmp_path, now=NOW + VALIDITY - RENEW_BEFORE - datetime.timedelta(days=1))
    assert _cert(tmp_path).serial_number == first


@pytest.mark.parametrize("later", [VALIDITY - RENEW_BEFORE + datetime.timedelta(days=1), VALIDITY * 2])
def test_a_certificate_near_or_past_its_end_is_made_again_at_start(tmp_path: Path, later: datetime.timedelta) -> None:
    ensure_pair(tmp_path, now=NOW)
    first = _cert(tmp_path).serial_number
    ensure_pair(tmp_path, now=NOW + later)
    renewed = _cert(tmp_path)
    assert renewed.serial_number != first
    assert renewed.not_valid_after_utc == NOW + later + VALIDITY


def test_a_certificate_that_does_not_name_a_new_listen_host_is_made_again_naming_both(tmp_path: Path) -> None:
    ensure_pair(tmp_path, host="10.0.0.5", now=NOW)
    ensure_pair(tmp_path, host="hub.example.lan", now=NOW)
    assert {"10.0.0.5", "hub.example.lan"} <= _names(_cert(tmp_path))
    serial = _cert(tmp_path).serial_number
    ensure_pair(tmp_path, host="0.0.0.0", now=NOW)  # a wildcard names nothing: kept
    assert _cert(tmp_path).serial_number == serial


def test_a_ca_certificate_an_older_hub_made_is_replaced_by_a_leaf(tmp_path: Path) -> None:
    cert_path, key_path = default_paths(tmp_path)
    make_self_signed(cert_path, key_path, now=NOW)
    # an older hub's pair: the same, but a CA for ten years
    old = _cert(tmp_path)
    from cryptography.hazmat.primitives import hashes, serialization

    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    ca = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(old.issuer)
          .public_key(old.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(NOW).not_valid_after(NOW + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(key, hashes.SHA256()))  # type: ignore[arg-type]
    cert_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    ensure_pair(tmp_path, now=NOW)
    assert _cert(tmp_path).extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_an_operator_pair_is_used_as_given_and_names_its_section_when_incomplete(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "op.pem", tmp_path / "op.key"
    make_self_signed(cert_path, key_path, now=NOW)
    pair = ensure_pair(tmp_path / "state", str(cert_path), str(key_path), section="grpc")
    assert (pair.certificate, pair.self_signed) == (cert_path, False)
    assert not default_paths(tmp_path / "state")[0].exists()
    with pytest.raises(ConfigError, match=r"^grpc\.certificate and grpc\.private_key"):
        ensure_pair(tmp_path, str(cert_path), "", section="grpc")
    with pytest.raises(ConfigError, match=r"^http\.certificate: "):
        ensure_pair(tmp_path, str(tmp_path / "absent.pem"), str(key_path), section="http")
