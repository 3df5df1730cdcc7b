"""Which doors speak TLS: beyond loopback by default, plain text there only when the operator says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.core.errors import ConfigError
from daemon.runtime.config import HubConfig
from daemon.runtime.listen import is_loopback, serves_tls

APPLIANCE = Path(__file__).resolve().parents[3] / "packaging" / "hub.toml"


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("hub.lan", False)])
def test_loopback_is_127_0_0_0_slash_8_and_1_and_localhost(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def _config(text: str) -> HubConfig:
    import tomllib

    return HubConfig.from_dict(tomllib.loads(text))


def test_the_embedded_defaults_stay_plain_text_on_loopback() -> None:
    config = HubConfig.from_toml(None)
    assert not serves_tls(config.http) and not serves_tls(config.grpc)


def test_the_appliance_config_serves_tls_on_every_door_it_opens_to_the_lan() -> None:
    config = HubConfig.from_toml(APPLIANCE)
    for section in (config.http, config.grpc):
        assert not is_loopback(section.listen.rpartition(":")[0])
        assert serves_tls(section)
    assert config.http3.retry


@pytest.mark.parametrize(("keys", "tls"), [
    ('listen = "0.0.0.0:8080"', True),
    ('listen = "[::]:8080"', True),
    ('listen = "127.0.0.1:8080"', False),
    ('listen = "127.0.0.1:8080"\ntls = "on"', True),
    ('listen = "127.0.0.1:8080"\ncertificate = "c.pem"\nprivate_key = "k.pem"', True),
    ('listen = "0.0.0.0:8080"\nallow_plaintext = true', False),
    ('listen = "0.0.0.0:8080"\ntls = "off"\nallow_plaintext = true', False),
])
def test_which_listen_and_keys_give_tls(keys: str, tls: bool) -> None:
    config = _config(f"[http]\n{keys}\n[grpc]\n{keys.replace('8080', '50051')}\n")
    assert serves_tls(config.http) is tls and serves_tls(config.grpc) is tls


@pytest.mark.parametrize("section", ["http", "grpc"])
def test_plain_text_beyond_loopback_without_allow_plaintext_is_refused_naming_the_key(section: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{section}\.allow_plaintext: .*allow_plaintext = true"):
        _config(f'[{section}]\nlisten = "0.0.0.0:1"\ntls = "off"\n')


@pytest.mark.parametrize(("text", "key"), [
    ('[http]\ntls = "maybe"\n', "http.tls"),
    ('[grpc]\ncertificate = "c.pem"\n', "grpc.certificate"),
    ("[http]\nmax_body_bytes = 2048\n[http3]\nmax_buffered_bytes = 1024\n", "http3.max_buffered_bytes"),
    ("[http3]\nretry = 1\n", "http3.retry"),
])
def test_bad_tls_and_buffer_keys_are_refused_naming_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key.replace('.', chr(92) + '.')}"):
        _config(text)
