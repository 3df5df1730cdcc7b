"""Listen addresses: parsing, loopback or beyond, and whether a TCP door must speak TLS there.

Beyond loopback (anything but 127.0.0.0/8, ::1 and localhost; the wildcards 0.0.0.0 and ::
included) passwords, API keys and tokens would cross the network, so the HTTP/1.1 and gRPC
doors speak TLS there unless the operator explicitly allows plain text.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

from daemon.core.errors import ConfigError

TLS_MODES = ("auto", "on", "off")


class DoorSection(Protocol):
    """The keys ``[http]`` and ``[grpc]`` share about where they listen and how."""

    @property
    def listen(self) -> str: ...  # noqa: D102 - the config key
    @property
    def tls(self) -> str: ...  # noqa: D102
    @property
    def certificate(self) -> str: ...  # noqa: D102
    @property
    def private_key(self) -> str: ...  # noqa: D102
    @property
    def allow_plaintext(self) -> bool: ...  # noqa: D102


def parse_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` -> ``("127.0.0.1", 8080)``; ``[::1]:80`` for IPv6."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; wildcards (0.0.0.0, ::) and every other address are beyond."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it resolves to whatever the network says


def serves_tls(section: DoorSection) -> bool:
    """Whether a TCP door serves TLS: ``tls = "on"``; "auto" with a certificate set, or beyond loopback
    unless ``allow_plaintext``; never for "off" (``check_exposure`` refuses that beyond loopback)."""
    if section.tls != "auto":
        return section.tls == "on"
    beyond = not is_loopback(parse_listen(section.listen)[0])
    return bool(section.certificate) or (beyond and not section.allow_plaintext)


def check_exposure(name: str, section: DoorSection) -> None:
    """ConfigError naming the key: a bad ``tls``, half a PEM pair, or plain text beyond loopback not allowed."""
    if section.tls not in TLS_MODES:
        raise ConfigError(f'{name}.tls: {section.tls!r} is not "auto", "on" or "off"')
    if bool(section.certificate) != bool(section.private_key):
        raise ConfigError(f"{name}.certificate and {name}.private_key: set both or neither")
    if section.tls == "off" and not is_loopback(parse_listen(section.listen)[0]) and not section.allow_plaintext:
        raise ConfigError(
            f"{name}.allow_plaintext: {name}.listen {section.listen!r} is beyond loopback and "
            f'{name}.tls = "off" would send keys, passwords and tokens in clear text; '
            f"set {name}.allow_plaintext = true to accept that")
