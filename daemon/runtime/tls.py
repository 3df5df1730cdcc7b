"""TLS material for the doors: the operator's pair, or a self-signed one the hub makes and renews.

Every door that serves TLS (HTTP/3 always; HTTP/1.1 and gRPC when they listen beyond
loopback, see ``config.serves_tls``) uses the configured PEM pair, or the state dir's
self-signed one.  That certificate is a leaf, not a CA (a key that leaks cannot sign for
other names), valid for a year, and made again at start when it nears its end, is a CA
(older hubs made one) or does not name a host a door listens on.  It names ``localhost``,
``127.0.0.1``, ``::1``, this machine's host name and each listen host, so a local client
can pin it: ``democratic-ai call`` does, from the path endpoints.json gives.
The key is written with mode 0600 before any byte of it reaches the disk.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from daemon.core.errors import ConfigError
from daemon.runtime.files import atomic_write

TLS_DIR = "tls"
# the names are from when only HTTP/3 used the pair; kept so existing state dirs keep theirs
CERT_FILE = "http3-cert.pem"
KEY_FILE = "http3-key.pem"
VALIDITY = datetime.timedelta(days=365)
#: a self-signed certificate with less than this left is made again at start
RENEW_BEFORE = datetime.timedelta(days=30)
#: wildcard listen hosts name no interface a client could put in a URL
_WILDCARDS = ("", "0.0.0.0", "::")


@dataclass(frozen=True, slots=True)
class TlsPair:
    """PEM file paths a door serves; ``self_signed`` when the hub made them itself."""

    certificate: Path
    private_key: Path
    self_signed: bool


def default_paths(state_dir: Path) -> tuple[Path, Path]:
    """Where the self-signed pair lives in a state dir (clients read the certificate from here)."""
    return state_dir / TLS_DIR / CERT_FILE, state_dir / TLS_DIR / KEY_FILE


def ensure_pair(state_dir: Path, certificate: str = "", private_key: str = "", *, host: str = "",
                section: str = "http3", now: datetime.datetime | None = None) -> TlsPair:
    """The configured PEM pair when set (both must exist; ConfigError names ``section``'s keys), else the
    state dir's self-signed one, made when absent and made again when ``needs_renewal``."""
    if certificate or private_key:
        if not (certificate and private_key):
            raise ConfigError(f"{section}.certificate and {section}.private_key: set both or neither")
        for key, value in ((f"{section}.certificate", certificate), (f"{section}.private_key", private_key)):
            if not Path(value).is_file():
                raise ConfigError(f"{key}: {value} does not exist")
        return TlsPair(Path(certificate), Path(private_key), self_signed=False)
    now = now or datetime.datetime.now(datetime.UTC)
    cert_path, key_path = default_paths(state_dir)
    existing = _read(cert_path) if key_path.is_file() else None
    if existing is None or needs_renewal(existing, now, host=host):
        hosts = {host} | (_named_hosts(existing) if existing is not None else set())
        make_self_signed(cert_path, key_path, hosts=hosts, now=now)
    return TlsPair(cert_path, key_path, self_signed=True)


def needs_renewal(cert: x509.Certificate, now: datetime.datetime, *, host: str = "") -> bool:
    """True when ``cert`` ends within RENEW_BEFORE of ``now``, is a CA, or does not name ``host``."""
    if cert.not_valid_after_utc - now < RENEW_BEFORE or cert.not_valid_before_utc > now:
        return True
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return True
    except x509.ExtensionNotFound:
        pass
    return host not in _WILDCARDS and host not in _named_hosts(cert)


def make_self_signed(cert_path: Path, key_path: Path, *, hosts: set[str] | frozenset[str] = frozenset(),
                     now: datetime.datetime | None = None) -> None:
    """A P-256 leaf valid VALIDITY from ``now`` for localhost, loopback, this host and ``hosts``; key first (0600)."""
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    dns = {"localhost", socket.gethostname()}
    addresses = {"127.0.0.1", "::1"}
    for host in hosts - set(_WILDCARDS):
        try:
            addresses.add(str(ipaddress.ip_address(host)))
        except ValueError:
            dns.add(host)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in sorted(dns) if d and d.isascii()]
    names.extend(x509.IPAddress(ipaddress.ip_address(a)) for a in sorted(addresses))
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "democratic-ai"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"democratic-ai hub {socket.gethostname()}"[:64]),
    ])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        # a leaf: clients pin this very certificate; it must not be able to vouch for any other
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(key_path, key_pem, private=True)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def server_context(pair: TlsPair) -> ssl.SSLContext:
    """An ``ssl`` server context for a TCP door: TLS 1.2 or later, the pair loaded."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(pair.certificate, pair.private_key)
    return context


def client_context(cafile: Path | None = None) -> ssl.SSLContext:
    """A client context trusting the system's CAs and, when the file exists, the hub's own certificate."""
    context = ssl.create_default_context()
    if cafile is not None and cafile.is_file():
        context.load_verify_locations(cafile)
    return context


def _read(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None  # absent or unreadable: made again


def _named_hosts(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {*san.get_values_for_type(x509.DNSName), *(str(a) for a in san.get_values_for_type(x509.IPAddress))}
