"""The console's guards against a real hub: what a role without billing:read sees, whose page may
open the feed with the cookie, how sign-in refuses a form of another site, and the per-key bounds.

People here: the operator (bootstrap key), acme's tenant admin and acme's viewer (a key without
billing:read), and a user key making the calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.test_console_api import Browser, browser, call, start_hub
from tests.support.cli import cli_ok
from tests.support.hubproc import HubProcess, write_config

BILLING = {"calls_today", "calls_period", "credits_balance", "estimated_invoice"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    process = start_hub(tmp_path_factory.mktemp("guards"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def keys(hub: HubProcess) -> dict[str, str]:
    cli_ok(hub.state_dir, "tenant", "create", "acme")
    keys = {"operator": hub.admin_key}
    for role in ("tenant_admin", "viewer", "user"):
        keys[role] = cli_ok(hub.state_dir, "key", "create", "--tenant", "acme", "--role", role).splitlines()[0]
    return keys


async def signed_in(b: Browser, key: str) -> None:
    status, body, _ = await b.sign_in(api_key=key)
    assert status == 200, body


async def test_a_viewer_without_billing_read_sees_no_money_and_no_usage(hub: HubProcess, keys: dict[str, str]) -> None:
    await call(hub, keys["user"])
    async with browser(hub) as b:
        await signed_in(b, keys["viewer"])
        status, overview = await b.request("GET", "/v1/console/overview")
        assert status == 200 and [t["name"] for t in overview["tenants"]] == ["acme"]
        assert not BILLING & set(overview["tenants"][0]), "the API keeps these behind billing:read"
        status, body = await b.request("GET", "/v1/console/usage")
        assert status == 403 and body["error"]["code"] == "PERMISSION_DENIED"
    async with browser(hub) as b:
        await signed_in(b, keys["tenant_admin"])
        _, overview = await b.request("GET", "/v1/console/overview")
        assert BILLING <= set(overview["tenants"][0])
        assert (await b.request("GET", "/v1/console/usage"))[0] == 200


async def test_usage_minutes_must_be_plain_digits(hub: HubProcess, keys: dict[str, str]) -> None:
    async with browser(hub) as b:
        await signed_in(b, keys["tenant_admin"])
        for raw in ("²", "1" * 5000, "-1", "0", "1441"):
            status, body = await b.request("GET", f"/v1/console/usage?minutes={raw}")
            assert status == 400 and body["error"]["code"] == "VALIDATION_ERROR", raw


async def test_the_feed_opens_with_the_cookie_only_from_the_hubs_own_page(
        hub: HubProcess, keys: dict[str, str]) -> None:
    async with browser(hub) as b:
        await signed_in(b, keys["tenant_admin"])
        for headers in ({"Origin": "http://127.0.0.1:1"}, {}, {"Sec-Fetch-Site": "same-site"}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await b.http.ws_connect(f"{hub.url}/v1/events", headers=headers)
            assert refused.value.status == 403, headers
        ws = await b.http.ws_connect(f"{hub.url}/v1/events", origin=hub.url)
        await ws.close()
        ws = await b.http.ws_connect(f"{hub.url}/v1/events", headers={"Sec-Fetch-Site": "same-origin"})
        await ws.close()
    async with aiohttp.ClientSession(headers={"X-API-Key": keys["tenant_admin"]}) as http:
        ws = await http.ws_connect(f"{hub.url}/v1/events", origin="http://elsewhere.example")
        await ws.close()  # a key in a header is no browser's ambient credential: no origin rule


async def test_the_feed_speaks_the_watchers_language(hub: HubProcess, keys: dict[str, str]) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{hub.url}/v1/events", headers={
                "X-API-Key": keys["user"], "Accept-Language": "ja", "Connection": "Upgrade", "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as resp:
            body = await resp.json()
    assert resp.status == 403 and body["error"]["code"] == "PERMISSION_DENIED"
    assert any("\u3040" <= ch <= "\u30ff" for ch in body["error"]["message"]), body


async def test_one_key_holds_four_feeds(hub: HubProcess, keys: dict[str, str]) -> None:
    async with aiohttp.ClientSession(headers={"X-API-Key": keys["viewer"]}) as http:
        feeds = [await http.ws_connect(f"{hub.url}/v1/events") for _ in range(4)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{hub.url}/v1/events")
        assert refused.value.status == 503
        async with aiohttp.ClientSession(headers={"X-API-Key": keys["operator"]}) as operator:
            await (await operator.ws_connect(f"{hub.url}/v1/events")).close()
        for ws in feeds:
            await ws.close()


async def test_sign_in_takes_json_from_its_own_page_and_ends_the_old_session(
        hub: HubProcess, keys: dict[str, str]) -> None:
    async with browser(hub) as b:
        url = f"{hub.url}/v1/console/session"
        form = f'{{"api_key": "{keys["viewer"]}"}}'
        async with b.http.post(url, data=form, headers={"Content-Type": "text/plain"}) as resp:
            assert resp.status == 400 and "Set-Cookie" not in resp.headers, "a cross-site form cannot sign in"
        evil = {"Origin": "http://evil.example"}
        async with b.http.post(url, json={"api_key": keys["viewer"]}, headers=evil) as resp:
            assert resp.status == 403 and (await resp.json())["error"]["details"] == {"reason": "origin"}
        await signed_in(b, keys["tenant_admin"])
        old = b.http.cookie_jar.filter_cookies(hub.url)["da_console"].value
        async with b.http.post(url, json={"api_key": keys["viewer"]}, headers={"Origin": hub.url}) as resp:
            assert resp.status == 200
    async with aiohttp.ClientSession(cookies={"da_console": old}) as stale:
        async with stale.get(f"{hub.url}/v1/console/overview") as resp:
            assert resp.status == 401, "signing in again ended the session the browser had"


async def test_a_bad_token_in_a_body_does_not_end_the_session(hub: HubProcess, keys: dict[str, str]) -> None:
    async with browser(hub) as b:
        await signed_in(b, keys["tenant_admin"])
        status, body = await b.request("POST", "/v1/auth/refresh", json_body={"refresh_token": "not.a.token"})
        assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED"
        assert (await b.request("GET", "/v1/console/overview"))[0] == 200, "the session's own key still holds"


async def test_a_key_signing_in_again_and_again_evicts_only_its_own_sessions(
        hub: HubProcess, keys: dict[str, str]) -> None:
    async with browser(hub) as operator:
        await signed_in(operator, keys["operator"])
        sessions = []
        for _ in range(9):
            async with browser(hub) as b:
                await signed_in(b, keys["viewer"])
                sessions.append(b.http.cookie_jar.filter_cookies(hub.url)["da_console"].value)
        assert (await operator.request("GET", "/v1/console/overview"))[0] == 200
        answers = []
        for token in sessions:
            async with aiohttp.ClientSession(cookies={"da_console": token}) as http:
                async with http.get(f"{hub.url}/v1/console/overview") as resp:
                    answers.append(resp.status)
        assert answers == [401] + [200] * 8, "eight per key: its own oldest went"


async def test_the_cookie_can_be_made_secure_behind_a_tls_proxy(tmp_path: Path) -> None:
    config = write_config(tmp_path / "hub.toml", modules=("echo",))
    config.write_text(config.read_text().replace("[http]\n", "[http]\nconsole_secure_cookie = true\n", 1))
    hub = HubProcess(tmp_path, config).start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{hub.url}/v1/console/session", json={"api_key": hub.admin_key}) as resp:
                assert resp.status == 200 and resp.headers["Set-Cookie"].endswith("; Secure")
    finally:
        hub.stop()
