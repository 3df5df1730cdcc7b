"""Write docs/console-en.png and docs/console-ja.png: the console of a real hub that has served a few calls.

Run from the repository root: ``.venv/bin/python -m tests.browser.shoot``.  Needs Debian's
chromium and chromium-driver (and a Japanese font, e.g. fonts-ipafont-gothic, for the ja shot).
"""

from __future__ import annotations

import argparse
import base64
import random
import tempfile
import time
from pathlib import Path

from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.browser.conftest import chrome, cli_ok, console_scene, new_key, post_call
from tests.support.hubproc import ROOT

DOCS = ROOT / "docs"


def full_page(driver: WebDriver, path: Path) -> None:
    """The whole page, not just the window: Chromium's own capture beyond the viewport (DevTools protocol)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))


def main(minutes: int = 4) -> None:
    with tempfile.TemporaryDirectory(prefix="console-shoot-") as tmp:
        scene_iter = console_scene(Path(tmp) / "hub")
        (Path(tmp) / "hub").mkdir()
        scene = next(scene_iter)
        try:
            cli_ok(scene.hub.state_dir, "tenant", "create", "kobe-clinic")
            clinic = new_key(scene.hub, "kobe-clinic", "user")
            rng = random.Random(14)
            for minute in range(minutes):  # a burst a minute, so the usage chart has a shape
                for _ in range(rng.randint(6, 20)):
                    post_call(scene.hub.url, scene.user_key, "echo", {"n": rng.randint(0, 9)})
                for _ in range(rng.randint(2, 8)):
                    post_call(scene.hub.url, clinic, "text.summarize", {"text": "The hub serves the clinic. " * 8})
                if minute < minutes - 1:
                    time.sleep(61 - time.time() % 60)
            driver = chrome(Path(tmp) / "profile", width=1360, height=1180)
            try:
                driver.get(f"{scene.hub.url}/console")
                wait = WebDriverWait(driver, 20)
                wait.until(lambda d: d.find_element(By.ID, "signin").is_displayed())
                driver.find_element(By.ID, "api-key").send_keys(scene.admin_key)
                driver.find_element(By.ID, "signin-button").click()
                wait.until(lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "on")
                for i in range(6):  # calls made while the page is open show in Recent calls
                    post_call(scene.hub.url, clinic if i % 2 else scene.user_key, "echo", {"i": i})
                wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#calls tbody tr")) >= 6)
                time.sleep(2.5)  # one node_status/network_stats round
                full_page(driver, DOCS / "console-en.png")
                Select(driver.find_element(By.ID, "lang")).select_by_value("ja")
                wait.until(lambda d: d.find_element(By.ID, "node-title").text == "このノード")
                time.sleep(0.5)
                full_page(driver, DOCS / "console-ja.png")
            finally:
                driver.quit()
        finally:
            scene_iter.close()
    for name in ("console-en.png", "console-ja.png"):
        print(DOCS / name, (DOCS / name).stat().st_size, "bytes")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=int, default=4, help="minutes of calls before the shots (1: quick)")
    main(parser.parse_args().minutes)
