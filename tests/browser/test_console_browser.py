"""The operator console in a real browser: sign in, read the panels, watch calls arrive, switch language.

A real hub (tests/support/hubproc.py) and Debian's headless Chromium driven by selenium;
the page talks to the hub only through the console contract (cookie session, /v1/console/*,
the /v1/events WebSocket) under the page's CSP.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.browser.conftest import ConsoleScene, chrome, post_call
from tests.support.cli import cli_ok

T = TypeVar("T")
WAIT_S = 15


def wait_for(driver: webdriver.Chrome, what: Callable[[webdriver.Chrome], T], message: str) -> T:
    """Poll ``what`` until it returns something truthy (the page updates itself, asynchronously)."""
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(what, message)


def text(driver: webdriver.Chrome, css: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, css).text


def call_echo(scene: ConsoleScene, key: str, n: int = 1) -> None:
    """``n`` calls through the HTTP API, as any client of the hub makes them."""
    for i in range(n):
        post_call(scene.hub.url, key, "echo", {"i": i})


@pytest.fixture
def console(driver: webdriver.Chrome, scene: ConsoleScene) -> Iterator[webdriver.Chrome]:
    """The console page, signed out, in English (no language remembered from an earlier story)."""
    driver.get(f"{scene.hub.url}/console")
    driver.delete_all_cookies()
    driver.execute_script("localStorage.clear(); sessionStorage.clear();")
    driver.get(f"{scene.hub.url}/console")
    wait_for(driver, lambda d: d.find_element(By.ID, "signin").is_displayed(), "the sign-in form never showed")
    yield driver


def sign_in(driver: webdriver.Chrome, key: str) -> None:
    field = driver.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.ID, "signin-button").click()


def signed_in(driver: webdriver.Chrome, key: str) -> None:
    sign_in(driver, key)
    wait_for(driver, lambda d: d.find_element(By.ID, "dashboard").is_displayed(),
             f"the dashboard never showed; sign-in said: {text(driver, '#signin-error')!r}")
    wait_for(driver, lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "on",
             "the live event stream (/v1/events) never connected")


def table_rows(driver: webdriver.Chrome, table_id: str) -> list[list[str]]:
    return [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")]


def csp_errors(driver: webdriver.Chrome) -> list[Any]:
    return [entry for entry in driver.get_log("browser") if "Content Security Policy" in entry.get("message", "")]


def test_the_root_sends_the_operator_to_the_console_page_under_a_strict_csp(scene: ConsoleScene) -> None:
    with urllib.request.urlopen(f"{scene.hub.url}/", timeout=10) as response:  # follows the 302
        assert response.url.endswith("/console")
        assert response.headers["Content-Type"].startswith("text/html")
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        page = response.read().decode()
    assert "<script>" not in page and "style=" not in page  # nothing inline: the CSP would block it


def test_an_operator_signs_in_and_sees_the_node_its_modules_and_tenants(console: webdriver.Chrome,
                                                                         scene: ConsoleScene) -> None:
    signed_in(console, scene.admin_key)

    modules = wait_for(console, lambda d: {row[0]: row for row in table_rows(d, "modules")}, "no modules listed")
    assert "echo" in modules and modules["echo"][1] == "loaded", modules
    tenants = {row[0]: row for row in table_rows(console, "tenants")}
    assert {"default", "acme"} <= set(tenants), tenants
    assert tenants["acme"][2] == "active"
    assert text(console, "#node-version")
    assert re.fullmatch(r"[A-Z][a-z]+ \d{1,2}, \d{4}", text(console, "#node-started-date"))  # en: November 30, 2026
    assert "No peers" in text(console, "#peers-empty")
    assert text(console, "#ledger-writer") == "up"
    assert console.find_element(By.CSS_SELECTOR, "#chart svg[role=img]").get_attribute("aria-labelledby")
    assert not csp_errors(console), "the page broke its own Content-Security-Policy"


def test_a_call_moves_the_live_count_and_the_chart_without_a_reload(console: webdriver.Chrome,
                                                                     scene: ConsoleScene) -> None:
    signed_in(console, scene.admin_key)
    console.execute_script("window.noReloadMarker = 42;")
    before = int(wait_for(console, lambda d: text(d, "#node-calls").replace(",", "").strip("—") or None,
                          "node_status never filled in the call count"))

    call_echo(scene, scene.user_key, 3)

    wait_for(console, lambda d: int(text(d, "#node-calls").replace(",", "")) >= before + 3,
             "the node's call count did not move")
    recent = wait_for(console, lambda d: table_rows(d, "calls"), "the calls never showed in Recent calls")
    assert recent[0][1] == "echo" and recent[0][3] == "acme" and recent[0][5] == "OK", recent
    legend = text(console, "#legend")
    assert "acme" in legend, f"the usage chart has no line for the tenant that called: {legend!r}"
    assert console.find_elements(By.CSS_SELECTOR, "#chart polyline")
    console.find_element(By.ID, "by-action").click()
    assert "echo" in text(console, "#legend")
    assert console.execute_script("return window.noReloadMarker;") == 42, "the page reloaded"


def test_the_operator_switches_to_japanese_and_it_is_remembered(console: webdriver.Chrome,
                                                                scene: ConsoleScene) -> None:
    signed_in(console, scene.admin_key)
    Select(console.find_element(By.ID, "lang")).select_by_value("ja")

    wait_for(console, lambda d: text(d, "#node-title") == "このノード", "the panels did not turn Japanese")
    assert text(console, "#tenants-title") == "テナント"
    assert re.fullmatch(r"\d{4}年\d{1,2}月\d{1,2}日", text(console, "#node-started-date"))
    assert console.find_element(By.TAG_NAME, "html").get_attribute("lang") == "ja"
    invoice = {row[0]: row for row in table_rows(console, "tenants")}["acme"][6]
    assert re.fullmatch(r"[¥￥][\d,]+", invoice), f"JPY is shown without decimals: {invoice!r}"

    console.refresh()  # the choice survives a reload, and so does the session (cookie + CSRF token)
    wait_for(console, lambda d: text(d, "#node-title") == "このノード", "Japanese was not remembered")
    assert Select(console.find_element(By.ID, "lang")).first_selected_option.get_attribute("value") == "ja"


def test_a_plain_user_is_refused_at_sign_in(console: webdriver.Chrome, scene: ConsoleScene) -> None:
    sign_in(console, scene.user_key)
    message = wait_for(console, lambda d: text(d, "#signin-error"), "no error after signing in as a user")
    assert message == "This account may not open the console."
    assert not console.find_element(By.ID, "dashboard").is_displayed()

    sign_in(console, "not-a-key")
    wait_for(console, lambda d: "not right" in text(d, "#signin-error"), "a wrong key was not refused")


def test_a_developer_signs_in_with_email_and_password(console: webdriver.Chrome, scene: ConsoleScene) -> None:
    cli_ok(scene.hub.state_dir, "user", "create", "--tenant", "acme", "dev@acme.example", "--role", "developer",
           "--password-stdin", stdin="correct horse battery staple\n")
    console.find_element(By.ID, "email").send_keys("dev@acme.example")
    console.find_element(By.ID, "password").send_keys("correct horse battery staple")
    console.find_element(By.ID, "signin-button").click()
    wait_for(console, lambda d: d.find_element(By.ID, "dashboard").is_displayed(),
             f"the dashboard never showed; sign-in said: {text(console, '#signin-error')!r}")
    assert text(console, "#who") == "Developer · acme"
    assert [row[0] for row in table_rows(console, "tenants")] == ["acme"]
    # no billing:read: the hub sends no counts or money, and the page shows no columns or chart for them
    assert [len(row) for row in table_rows(console, "tenants")] == [3]
    headers = console.find_elements(By.CSS_SELECTOR, "#tenants thead th")
    assert [h.is_displayed() for h in headers] == [True] * 3 + [False] * 4
    wait_for(console, lambda d: not d.find_element(By.ID, "usage-title").is_displayed(),
             "the usage chart shows for a role the hub gives no usage")


def test_a_tenant_admin_sees_only_its_own_tenant_and_signs_out(console: webdriver.Chrome,
                                                               scene: ConsoleScene) -> None:
    signed_in(console, scene.tenant_admin_key)
    tenants = wait_for(console, lambda d: table_rows(d, "tenants"), "no tenants listed")
    assert [row[0] for row in tenants] == ["acme"]

    console.find_element(By.ID, "signout").click()  # DELETE with the X-CSRF-Token header
    wait_for(console, lambda d: d.find_element(By.ID, "signin").is_displayed(), "sign-out did not return to sign-in")
    status = console.execute_async_script(
        "const done = arguments[0]; fetch('/v1/console/overview').then((r) => done(r.status));")
    assert status == 401, "the session still works after signing out: the DELETE did not reach the hub"


def test_a_browser_set_to_chinese_opens_the_console_in_chinese(scene: ConsoleScene,
                                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    browser = chrome(tmp_path_factory.mktemp("chromium-zh"), lang="zh-CN")
    try:
        browser.get(f"{scene.hub.url}/console")
        wait_for(browser, lambda d: text(d, "#signin-title") == "登录控制台", "navigator.languages was not followed")
        signed_in(browser, scene.viewer_key)
        wait_for(browser, lambda d: text(d, "#node-title") == "本节点", "the panels are not in Chinese")
        assert re.fullmatch(r"\d{4}年\d{1,2}月\d{1,2}日", text(browser, "#node-started-date"))
        assert [row[0] for row in table_rows(browser, "tenants")] == ["acme"]  # a viewer: its own tenant only
    finally:
        browser.quit()
