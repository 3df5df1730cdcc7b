"""A real hub and a real headless Chromium driven by selenium, for the operator console's tests.

Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs them as root).  When they
are absent and cannot be installed here (not root, no apt-get) the tests skip and say so;
any other failure to set the scene fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.support.cli import cli_ok
from tests.support.hubproc import HubProcess, write_config

APT_PACKAGES = ("chromium", "chromium-driver")


def _find(name: str, debian_path: str) -> str | None:
    return debian_path if os.access(debian_path, os.X_OK) else shutil.which(name)


def browser_binaries() -> tuple[str, str]:
    """Chromium and its driver; installed with apt when root can, else the test skips with the reason."""
    chromium, driver = _find("chromium", "/usr/bin/chromium"), _find("chromedriver", "/usr/bin/chromedriver")
    if chromium and driver:
        return chromium, driver
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"chromium/chromedriver are not installed and cannot be installed here (not root or no "
                    f"apt-get): run `apt-get install {' '.join(APT_PACKAGES)}` or `make test` as root")
    subprocess.run(["apt-get", "install", "-y", "-qq", *APT_PACKAGES], check=True, timeout=600,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    chromium, driver = _find("chromium", "/usr/bin/chromium"), _find("chromedriver", "/usr/bin/chromedriver")
    assert chromium and driver, "apt-get installed chromium and chromium-driver but the binaries are not there"
    return chromium, driver


def chrome(user_data_dir: Path, *, lang: str = "en-US", width: int = 1360, height: int = 1000) -> webdriver.Chrome:
    """A headless Chromium that talks to nothing but the loopback hub (no sync, updates, QUIC or prefetch)."""
    chromium, driver = browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--disable-extensions", "--disable-default-apps",
                 "--no-default-browser-check", "--hide-scrollbars", f"--lang={lang}",
                 f"--user-data-dir={user_data_dir}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"intl.accept_languages": lang})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


@dataclass(frozen=True)
class ConsoleScene:
    """A hub with a tenant ``acme`` and one key per role the tests sign in with."""

    hub: HubProcess
    admin_key: str
    tenant_admin_key: str
    viewer_key: str
    user_key: str


def new_key(hub: HubProcess, tenant: str, role: str) -> str:
    """A fresh API key, made with the CLI as an operator does."""
    return cli_ok(hub.state_dir, "key", "create", "--tenant", tenant, "--role", role).splitlines()[0].strip()


def post_call(url: str, key: str, action: str, payload: dict[str, object]) -> None:
    """One call through the HTTP API, as any client of the hub makes it; anything but 200 fails."""
    body = json.dumps({"action": action, "payload": payload}).encode()
    request = urllib.request.Request(f"{url}/v1/call", method="POST", data=body,
                                     headers={"X-API-Key": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200, response.status


def console_scene(state: Path) -> Iterator[ConsoleScene]:
    """Start the hub, make the tenant and keys; stop the hub afterwards."""
    hub = HubProcess(state, write_config(state / "hub.toml")).start()
    try:
        cli_ok(hub.state_dir, "tenant", "create", "acme")
        yield ConsoleScene(hub, hub.admin_key, new_key(hub, "acme", "tenant_admin"), new_key(hub, "acme", "viewer"),
                           new_key(hub, "acme", "user"))
    finally:
        hub.stop()


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleScene]:
    """One hub for the module's stories."""
    yield from console_scene(tmp_path_factory.mktemp("console-hub"))


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """One browser for the module; each test starts from a signed-out, English page (``console`` fixture)."""
    browser = chrome(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield browser
    finally:
        browser.quit()
