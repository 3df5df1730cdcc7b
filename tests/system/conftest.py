"""Session fixtures of the system tests: the hub's .deb, built once, and a cached Debian base tarball.

Both need root and the Debian tools; without them every test here skips with the reason (the tools are
installed through apt when root and missing).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.debian import built_deb, debian_base_tarball, needs_root_and_tools, private_mount_namespace


def pytest_configure(config: pytest.Config) -> None:
    """As root, run the session in a mount namespace of its own: a killed session leaves no mount on the host."""
    private_mount_namespace()


@pytest.fixture(scope="session")
def system_tools() -> None:
    """Skip (with the reason) where the system tests cannot run: not root, or the tools cannot be installed."""
    reason = needs_root_and_tools()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def hub_deb(system_tools: None) -> Path:
    """The hub's .deb from ``make deb``, built once per test session."""
    return built_deb()


@pytest.fixture(scope="session")
def debian_tarball(system_tools: None) -> Path:
    """A debootstrap minbase tarball of the host's release (cached across sessions)."""
    return debian_base_tarball()
