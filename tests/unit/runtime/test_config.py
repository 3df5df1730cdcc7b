"""Config: embedded defaults, unknown keys and bad values named."""

import pytest

from daemon.core.errors import ConfigError
from daemon.runtime.config import HubConfig, parse_rate


def test_no_file_gives_a_working_default_config() -> None:
    config = HubConfig.from_toml(None)
    assert config.http.listen == "127.0.0.1:8080"
    assert config.modules.enabled == ["echo", "text.summarize"]
    assert config.plans["starter"].base_monthly == "4900"


def test_a_file_overrides_only_what_it_names(tmp_path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text('[http]\nlisten = "127.0.0.1:9999"\n[plans.pro]\nbase_monthly = "9800"\n')
    config = HubConfig.from_toml(path)
    assert config.http.listen == "127.0.0.1:9999"
    assert config.http.max_body_bytes == 8 * 1024 * 1024
    assert config.plans["pro"].base_monthly == "9800"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[http]\nlisten = 8080\n", "http.listen"),
        ("[http]\nlistne = '127.0.0.1:1'\n", "http.listne"),
        ("[bogus]\nx = 1\n", "bogus"),
        ("[modules]\nenabled = 'echo'\n", "modules.enabled"),
        ("[mdns]\nenabled = 'yes'\n", "mdns.enabled"),
        ("[plans.starter]\nrate_limits = { api_calls = '5/fortnight' }\n", "plans.starter.rate_limits.api_calls"),
        ("[plans.starter]\nbase_monthly = 'lots'\n", "plans.starter.base_monthly"),
        ("[log]\nlevel = 'LOUD'\n", "log.level"),
    ],
)
def test_a_bad_key_or_value_is_refused_naming_the_key(tmp_path, text: str, key: str) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[")):
        HubConfig.from_toml(path)


def test_broken_toml_is_a_config_error(tmp_path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text("[http\n")
    with pytest.raises(ConfigError):
        HubConfig.from_toml(path)


def test_rates_read_as_count_per_window() -> None:
    assert parse_rate("1000/min") == (1000, 60.0)
    assert parse_rate("5/s") == (5, 1.0)
    assert parse_rate("10/h") == (10, 3600.0)
    with pytest.raises(ValueError):
        parse_rate("0/s")
