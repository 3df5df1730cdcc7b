"""Shared fixtures: a real hub subprocess per test module, real clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hubproc import HubProcess, write_config


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """A running hub with the default modules, its admin key and endpoints."""
    state: Path = tmp_path_factory.mktemp("hub")
    process = HubProcess(state, write_config(state / "hub.toml")).start()
    yield process
    process.stop()
