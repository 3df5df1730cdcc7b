"""TLS material for the HTTP/3 door: the configured pair, or a self-signed one made at first start.

The self-signed certificate names ``localhost``, ``127.0.0.1``, ``::1`` and the host the
door listens on, so a local client can pin it (``democratic-ai call --via h3`` does).
The key is written with mode 0600 before any byte of it reaches the disk.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from daemon.core.errors import ConfigError
from daemon.runtime.files import atomic_write

TLS_DIR = "tls"
CERT_FILE = "http3-cert.pem"
KEY_FILE = "http3-key.pem"
VALIDITY_DAYS = 3650


@dataclass(frozen=True, slots=True)
class TlsPair:
    """PEM file paths for the HTTP/3 door; ``self_signed`` when the hub made them itself."""

    certificate: Path
    private_key: Path
    self_signed: bool


def default_paths(state_dir: Path) -> tuple[Path, Path]:
    """Where the self-signed pair lives in a state dir (clients read the certificate from here)."""
    return state_dir / TLS_DIR / CERT_FILE, state_dir / TLS_DIR / KEY_FILE


def ensure_pair(state_dir: Path, certificate: str = "", private_key: str = "", *, host: str = "") -> TlsPair:
    """The configured PEM pair when set (both must exist), else the state dir's self-signed one, made if absent."""
    if certificate or private_key:
        if not (certificate and private_key):
            raise ConfigError("http3.certificate and http3.private_key: set both or neither")
        for key, value in (("http3.certificate", certificate), ("http3.private_key", private_key)):
            if not Path(value).is_file():
                raise ConfigError(f"{key}: {value} does not exist")
        return TlsPair(Path(certificate), Path(private_key), self_signed=False)
    cert_path, key_path = default_paths(state_dir)
    if not (cert_path.is_file() and key_path.is_file()):
        make_self_signed(cert_path, key_path, host=host)
    return TlsPair(cert_path, key_path, self_signed=True)


def make_self_signed(cert_path: Path, key_path: Path, *, host: str = "") -> None:
    """A P-256 pair valid 10 years for localhost, 127.0.0.1, ::1 and ``host``; the key is written (0600) first."""
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    addresses = {"127.0.0.1", "::1"}
    try:
        addresses.add(str(ipaddress.ip_address(host)))
    except ValueError:
        if host and host not in ("localhost", "0.0.0.0", "::"):
            names.append(x509.DNSName(host))
    names.extend(x509.IPAddress(ipaddress.ip_address(a)) for a in sorted(addresses))
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "democratic-ai"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"democratic-ai hub {socket.gethostname()}"[:64]),
    ])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(key_path, key_pem, private=True)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM))


