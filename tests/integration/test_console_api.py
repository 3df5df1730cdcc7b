"""The operator console against a real hub: its page, sessions, CSRF, overview, usage and live feed.

People here: the hub's operator (the bootstrap super_admin key), acme's and globex's tenant
admins, and applications holding user-role keys that make the calls the console shows.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import sqlite3
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.console.static import CSP
from tests.support.cli import cli_ok
from tests.support.hubproc import HubProcess, write_config

PASSWORD = "correct horse battery staple"


def start_hub(state: Path) -> HubProcess:
    return HubProcess(state, write_config(state / "hub.toml", modules=("echo",))).start()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """A hub serving only echo (quick to start); the console comes with every hub."""
    process = start_hub(tmp_path_factory.mktemp("console"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def keys(hub: HubProcess) -> dict[str, str]:
    """acme and globex, each with a tenant_admin key and a user key; the operator's key as "operator"."""
    keys = {"operator": hub.admin_key}
    for tenant in ("acme", "globex"):
        cli_ok(hub.state_dir, "tenant", "create", tenant)
        for role in ("tenant_admin", "user"):
            keys[f"{tenant}:{role}"] = cli_ok(hub.state_dir, "key", "create", "--tenant", tenant,
                                              "--role", role).splitlines()[0]
    return keys


class Browser:
    """A browser's view of the hub: one cookie jar, the CSRF token the page keeps after signing in."""

    def __init__(self, hub: HubProcess, session: aiohttp.ClientSession) -> None:
        self.hub = hub
        self.http = session
        self.csrf = ""

    async def sign_in(self, **body: str) -> tuple[int, Any, Any]:
        async with self.http.post(f"{self.hub.url}/v1/console/session", json=body) as resp:
            answer = await resp.json()
            if resp.status == 200:
                self.csrf = answer["csrf_token"]
            return resp.status, answer, resp.headers.copy()

    async def request(self, method: str, path: str, *, csrf: bool = True, json_body: Any = None,
                      headers: dict[str, str] | None = None) -> tuple[int, Any]:
        sent = {**({"X-CSRF-Token": self.csrf} if csrf and self.csrf else {}), **(headers or {})}
        async with self.http.request(method, f"{self.hub.url}{path}", json=json_body, headers=sent) as resp:
            body = await resp.read()
            return resp.status, json.loads(body) if body else None


@contextlib.asynccontextmanager
async def browser(hub: HubProcess) -> AsyncIterator[Browser]:
    # unsafe: the jar keeps cookies of an IP address host (127.0.0.1), as a browser does
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield Browser(hub, session)


async def call(hub: HubProcess, key: str, n: int = 1) -> None:
    async with aiohttp.ClientSession(headers={"X-API-Key": key}) as session:
        for _ in range(n):
            async with session.post(f"{hub.url}/v1/call", json={"action": "echo", "payload": {}}) as resp:
                assert resp.status == 200, await resp.text()


# -- the page ---------------------------------------------------------------------------------
async def test_the_hubs_address_leads_to_the_console_page_under_a_strict_policy(hub: HubProcess) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{hub.url}/", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/console"
        async with http.get(f"{hub.url}/console") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "text/html; charset=utf-8"
            assert resp.headers["Content-Security-Policy"] == CSP
            assert resp.headers["X-Frame-Options"] == "DENY"
            page = await resp.text()
        assert "<script>" not in page and " style=" not in page, "nothing inline: the policy forbids it"
        static = Path(__file__).resolve().parents[2] / "daemon" / "console" / "static"
        for asset in sorted(p.name for p in static.iterdir() if p.suffix in (".js", ".css", ".svg")):
            async with http.get(f"{hub.url}/console/assets/{asset}") as resp:
                assert resp.status == 200, asset
                assert resp.headers["Cache-Control"] == "no-cache"
                etag = resp.headers["ETag"]
            async with http.get(f"{hub.url}/console/assets/{asset}", headers={"If-None-Match": etag}) as resp:
                assert resp.status == 304, "the browser's copy is still good"
        async with http.get(f"{hub.url}/console/assets/nothing.js") as resp:
            assert resp.status == 404 and (await resp.json())["error"]["code"] == "NOT_FOUND"
        async with http.get(f"{hub.url}/console/i18n/ja.json") as resp:
            assert resp.status == 200 and isinstance(await resp.json(), dict)
        async with http.get(f"{hub.url}/console/i18n/fr.json") as resp:
            assert resp.status == 404 and (await resp.json())["error"]["code"] == "NOT_FOUND"


# -- sessions ---------------------------------------------------------------------------------
async def test_signing_in_with_a_key_sets_a_strict_http_only_cookie(hub: HubProcess, keys: dict[str, str]) -> None:
    async with browser(hub) as b:
        status, body, headers = await b.sign_in(api_key=keys["acme:tenant_admin"])
        assert status == 200, body
        assert set(body) == {"role", "tenant_id", "user_id", "csrf_token", "expires_at"}
        assert body["role"] == "tenant_admin" and body["user_id"] is None
        cookie = headers["Set-Cookie"]
        name, _, rest = cookie.partition("=")
        token, *flags = rest.split("; ")
        assert name == "da_console" and len(token) == 43
        assert flags == ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"], "no Secure over plain http"
        assert keys["acme:tenant_admin"] not in cookie
        status, overview = await b.request("GET", "/v1/console/overview")
        assert status == 200 and overview["viewer"] == {"role": "tenant_admin", "tenant_id": body["tenant_id"]}


async def test_bad_credentials_are_unauthenticated_and_a_user_key_may_not_watch(
        hub: HubProcess, keys: dict[str, str]) -> None:
    async with browser(hub) as b:
        status, body, _ = await b.sign_in(api_key="dai_notakey_0000000000000000")
        assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED"
        status, body, headers = await b.sign_in(api_key=keys["acme:user"])
        assert status == 403 and body["error"]["code"] == "PERMISSION_DENIED"
        assert "Set-Cookie" not in headers
        status, body = await b.request("GET", "/v1/console/overview")
        assert status == 401, "no session came of it"


async def test_a_cookie_request_that_changes_something_needs_the_csrf_token(
        hub: HubProcess, keys: dict[str, str]) -> None:
    echo = {"action": "echo", "payload": {"from": "console"}}
    async with browser(hub) as b:
        assert (await b.sign_in(api_key=keys["acme:tenant_admin"]))[0] == 200
        status, body = await b.request("POST", "/v1/call", csrf=False, json_body=echo)
        assert status == 403 and body["error"]["code"] == "PERMISSION_DENIED"
        assert body["error"]["details"] == {"reason": "csrf"}
        status, body = await b.request("POST", "/v1/call", csrf=False, json_body=echo,
                                       headers={"X-CSRF-Token": "guess"})
        assert status == 403 and body["error"]["details"] == {"reason": "csrf"}
        status, body = await b.request("POST", "/v1/call", json_body=echo)
        assert status == 200 and body["result"] == {"from": "console"}
        # a request with its own credential is not the cookie's: no CSRF token needed, cookie or not
        status, body = await b.request("POST", "/v1/call", csrf=False, json_body=echo,
                                       headers={"X-API-Key": keys["acme:user"]})
        assert status == 200


async def test_revoking_the_key_ends_its_session_at_once(hub: HubProcess, keys: dict[str, str]) -> None:
    raw = cli_ok(hub.state_dir, "key", "create", "--tenant", "acme", "--role", "viewer").splitlines()[0]
    prefix = "_".join(raw.split("_")[:2])
    async with browser(hub) as b, aiohttp.ClientSession() as admin:
        assert (await b.sign_in(api_key=raw))[0] == 200
        assert (await b.request("GET", "/v1/console/overview"))[0] == 200
        async with admin.delete(f"{hub.url}/v1/api-keys/{prefix}", headers={"X-API-Key": keys["operator"]}) as resp:
            assert resp.status == 200, await resp.text()
        status, body = await b.request("GET", "/v1/console/overview")
        assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED"
        status, _ = await b.request("GET", "/v1/console/usage")
        assert status == 401


async def test_a_person_signs_in_with_email_and_password_and_out_again(hub: HubProcess, keys: dict[str, str]) -> None:
    cli_ok(hub.state_dir, "user", "create", "--tenant", "globex", "vera@globex.example", "--role", "viewer",
           "--password-stdin", stdin=PASSWORD + "\n")
    async with browser(hub) as b:
        status, body, _ = await b.sign_in(email="vera@globex.example", password="wrong password")
        assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED"
        # no tenant named: the one tenant where this e-mail may sign in
        status, body, _ = await b.sign_in(email="vera@globex.example", password=PASSWORD)
        assert status == 200, body
        assert body["role"] == "viewer" and body["user_id"]
        status, overview = await b.request("GET", "/v1/console/overview")
        assert status == 200 and [t["name"] for t in overview["tenants"]] == ["globex"]
        status, _ = await b.request("DELETE", "/v1/console/session", csrf=False)
        assert status == 403, "signing out is a change too: it needs the CSRF token"
        async with b.http.delete(f"{hub.url}/v1/console/session", headers={"X-CSRF-Token": b.csrf}) as resp:
            assert resp.status == 204
            assert "Max-Age=0" in resp.headers["Set-Cookie"]
        status, _ = await b.request("GET", "/v1/console/overview")
        assert status == 401


# -- what the console shows -------------------------------------------------------------------
async def test_the_overview_shows_the_node_its_modules_tenants_and_ledger(
        hub: HubProcess, keys: dict[str, str]) -> None:
    await call(hub, keys["acme:user"], 2)
    async with browser(hub) as b:
        await b.sign_in(api_key=keys["operator"])
        status, overview = await b.request("GET", "/v1/console/overview")
    assert status == 200
    assert set(overview) == {"viewer", "node", "modules", "tenants", "ledger", "peers", "federation"}
    node = overview["node"]
    assert set(node) == {"name", "node_id", "version", "started_at", "uptime_s", "doors", "ready", "reasons"}
    assert node["ready"] is True and node["reasons"] == [] and node["uptime_s"] >= 0
    assert {"name": "http", "url": hub.url} in node["doors"]
    assert node["node_id"] == hub.endpoints["node_id"]
    (echo,) = overview["modules"]
    assert echo["name"] == "echo" and echo["state"] == "loaded" and echo["error"] is None
    assert "echo" in echo["capabilities"] and echo["in_flight"] == 0 and echo["queue_depth"] == 0
    assert echo["p50_ms"] is not None and echo["p99_ms"] >= echo["p50_ms"]
    tenants = {t["name"]: t for t in overview["tenants"]}
    assert {"default", "acme", "globex"} <= set(tenants)
    acme = tenants["acme"]
    assert set(acme) == {"id", "name", "plan", "status", "calls_today", "calls_period", "credits_balance",
                         "currency", "estimated_invoice"}
    assert acme["calls_today"] >= 2 and acme["calls_period"] >= acme["calls_today"]
    assert acme["currency"] == "JPY" and acme["status"] == "active" and acme["estimated_invoice"] == "4900"
    ledger = overview["ledger"]
    assert ledger["writer"] == "up" and ledger["last_seq"] >= 2
    assert ledger["verified"]["ok"] is True and ledger["verified"]["at"]
    assert overview["peers"] == [] and overview["federation"] is False


async def test_a_tenant_admin_sees_only_its_own_tenant(hub: HubProcess, keys: dict[str, str]) -> None:
    await call(hub, keys["acme:user"])
    await call(hub, keys["globex:user"])
    async with browser(hub) as b:
        await b.sign_in(api_key=keys["acme:tenant_admin"])
        _, overview = await b.request("GET", "/v1/console/overview")
        _, usage = await b.request("GET", "/v1/console/usage?minutes=5")
    (acme,) = overview["tenants"]
    assert acme["name"] == "acme" and overview["peers"] == []
    assert usage["minutes"] == 5 and usage["series"]
    assert {s["tenant_id"] for s in usage["series"]} == {acme["id"]}
    assert all(len(s["counts"]) == 5 for s in usage["series"])
    async with browser(hub) as b:
        await b.sign_in(api_key=keys["operator"])
        _, usage = await b.request("GET", "/v1/console/usage?minutes=5")
        assert len({s["tenant_id"] for s in usage["series"]}) >= 2, "the operator sees every tenant's calls"
        for bad in ("0", "1441", "abc"):
            status, body = await b.request("GET", f"/v1/console/usage?minutes={bad}")
            assert status == 400 and body["error"]["code"] == "VALIDATION_ERROR"


# -- the live feed ----------------------------------------------------------------------------
async def next_call(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> dict[str, Any]:
    """The next "call" frame, passing over the periodic status frames."""
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive()
            assert message.type is aiohttp.WSMsgType.TEXT, message
            frame = json.loads(message.data)
            assert set(frame) == {"type", "at", "data"}
            if frame["type"] == "call":
                return frame


async def test_calls_show_up_live_for_their_own_tenant_only(hub: HubProcess, keys: dict[str, str]) -> None:
    async with aiohttp.ClientSession() as http, browser(hub) as b:
        await b.sign_in(api_key=keys["acme:tenant_admin"])
        operator = await http.ws_connect(f"{hub.url}/v1/events", headers={"X-API-Key": keys["operator"]})
        acme = await b.http.ws_connect(f"{hub.url}/v1/events", origin=hub.url)  # the session's cookie, its page
        try:
            await call(hub, keys["globex:user"])
            await call(hub, keys["acme:user"])
            seen = await next_call(acme)
            assert seen["data"]["action"] == "echo" and seen["data"]["status"] == "OK"
            assert seen["data"]["door"] == "http" and seen["data"]["module"] == "echo"
            assert seen["data"]["latency_ms"] > 0
            assert "payload" not in json.dumps(seen), "no payloads on the feed"
            tenants = [(await next_call(operator))["data"]["tenant_id"] for _ in range(2)]
            assert tenants[1] == seen["data"]["tenant_id"] and tenants[0] != tenants[1]
            with pytest.raises(TimeoutError):
                await next_call(acme, timeout=2.5)  # globex's call never reaches acme
        finally:
            await operator.close()
            await acme.close()


async def status_frames(hub: HubProcess, key: str, seconds: float = 5) -> dict[str, Any]:
    """The data of each kind of frame a watcher with ``key`` gets within ``seconds`` (the last one of each)."""
    kinds: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{hub.url}/v1/events", headers={"X-API-Key": key})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    frame = json.loads((await ws.receive()).data)
                    kinds[frame["type"]] = frame["data"]
        await ws.close()
    return kinds


async def test_the_feed_sends_the_hubs_status_every_two_seconds(hub: HubProcess, keys: dict[str, str]) -> None:
    kinds = await status_frames(hub, keys["operator"])
    assert set(kinds["node_status"]) == {"uptime_s", "in_flight", "ready", "calls_total"}
    assert set(kinds["network_stats"]) == {"calls_per_s", "errors_per_s", "connections"}
    assert [m["name"] for m in kinds["module_status"]] == ["echo"]
    # a tenant's watcher: the node's uptime and readiness, none of the hub-wide (every tenant's) numbers
    kinds = await status_frames(hub, keys["acme:tenant_admin"])
    assert set(kinds["node_status"]) == {"uptime_s", "ready"}
    assert "network_stats" not in kinds, "the hub's call rates and connections are every tenant's doing"
    (echo,) = kinds["module_status"]
    assert echo["name"] == "echo" and echo["in_flight"] is None and echo["queue_depth"] is None, "a shared module"
    assert "peer_status" not in kinds, "the fleet is the operators' business"


async def test_the_feed_refuses_who_may_not_watch(hub: HubProcess, keys: dict[str, str]) -> None:
    async with aiohttp.ClientSession() as http:
        for headers, status in (({}, 401), ({"X-API-Key": keys["acme:user"]}, 403)):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"{hub.url}/v1/events", headers=headers)
            assert refused.value.status == status


def _frames(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Server frames (never masked) in ``data``: (opcode, payload), as far as they are whole."""
    at = 0
    while at + 2 <= len(data):
        opcode, length = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if length == 126:
            (length,), at = struct.unpack("!H", data[at:at + 2]), at + 2
        elif length == 127:
            (length,), at = struct.unpack("!Q", data[at:at + 8]), at + 8
        if at + length > len(data):
            return
        yield opcode, data[at:at + length]
        at += length


async def test_a_reader_that_stops_reading_is_closed_as_a_slow_reader(hub: HubProcess, keys: dict[str, str]) -> None:
    host, port = hub.url.removeprefix("http://").rsplit(":", 1)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a reader that takes little and then nothing
    stuck.connect((host, int(port)))
    stuck.sendall((f"GET /v1/events HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                   f"X-API-Key: {keys['operator']}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += stuck.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    async with aiohttp.ClientSession() as http:
        watcher = await http.ws_connect(f"{hub.url}/v1/events", headers={"X-API-Key": keys["operator"]})
        try:
            async with aiohttp.ClientSession(headers={"X-API-Key": keys["acme:user"]}) as app:
                # calls until the hub lets the stuck reader go: the other watcher's connection count drops
                async with asyncio.timeout(90):
                    while True:
                        await asyncio.gather(*(call_once(app, hub) for _ in range(50)))
                        if await dropped(watcher):
                            break
        finally:
            await watcher.close()
    stuck.settimeout(10)
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionError):
        while chunk := stuck.recv(65536):
            data += chunk
    stuck.close()
    closes = [payload for opcode, payload in _frames(data) if opcode == 0x8]
    assert closes, f"no close frame in {len(data)} bytes"
    assert struct.unpack("!H", closes[0][:2])[0] == 4008 and closes[0][2:] == b"slow reader"
    calls = [json.loads(p) for opcode, p in _frames(data) if opcode == 0x1]
    assert len(calls) < 2000, "the hub did not buffer every frame for the reader"


async def call_once(app: aiohttp.ClientSession, hub: HubProcess) -> None:
    """One call; answered or refused (past the plan's rate limit), it is a frame on the feed."""
    async with app.post(f"{hub.url}/v1/call", json={"action": "echo", "payload": {}}) as resp:
        assert resp.status in (200, 429)


async def dropped(watcher: aiohttp.ClientWebSocketResponse) -> bool:
    """True once a network_stats frame counts only this watcher's own connection."""
    while True:
        try:
            message = await watcher.receive(timeout=0.01)
        except TimeoutError:
            return False
        frame = json.loads(message.data)
        if frame["type"] == "network_stats" and frame["data"]["connections"] == 1:
            return True


# -- hubs of their own ------------------------------------------------------------------------
async def test_the_65th_watcher_is_refused_before_the_upgrade(tmp_path: Path) -> None:
    hub = start_hub(tmp_path)
    try:
        async with aiohttp.ClientSession(headers={"X-API-Key": hub.admin_key}) as http:
            watchers = [await http.ws_connect(f"{hub.url}/v1/events") for _ in range(64)]
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"{hub.url}/v1/events")
            assert refused.value.status == 503
            await watchers.pop().close()
            async with asyncio.timeout(10):
                while True:  # the closed one's place frees once the hub has seen it go
                    with contextlib.suppress(aiohttp.WSServerHandshakeError):
                        watchers.append(await http.ws_connect(f"{hub.url}/v1/events"))
                        break
                    await asyncio.sleep(0.1)
            for ws in watchers:
                await ws.close()
    finally:
        hub.stop()


async def test_usage_counts_come_from_the_ledger_and_survive_a_restart(tmp_path: Path) -> None:
    hub = start_hub(tmp_path)
    try:
        await call(hub, hub.admin_key, 3)
        async with browser(hub) as b:
            await b.sign_in(api_key=hub.admin_key)
            _, before = await b.request("GET", "/v1/console/usage?minutes=10")
    finally:
        hub.stop()
    (series,) = before["series"]
    assert series["action"] == "echo" and sum(series["counts"]) == 3 and len(series["counts"]) == 10
    hub.start()
    try:
        async with browser(hub) as b:
            await b.sign_in(api_key=hub.admin_key)
            _, after = await b.request("GET", "/v1/console/usage?minutes=10")
            _, overview = await b.request("GET", "/v1/console/overview")
    finally:
        hub.stop()
    (again,) = after["series"]
    assert sum(again["counts"]) == 3 and again["tenant_id"] == series["tenant_id"]
    assert overview["tenants"][0]["calls_today"] == 3


async def test_a_persons_session_outlives_its_short_access_token(tmp_path: Path) -> None:
    """Access tokens live 61 s here: the session renews one a minute before it expires, so after 1 s."""
    state = tmp_path
    config = write_config(state / "hub.toml", "[auth]\naccess_token_ttl_s = 61\n", modules=("echo",))
    hub = HubProcess(state, config).start()
    try:
        cli_ok(state, "user", "create", "--tenant", "default", "ops@example.org", "--role", "tenant_admin",
               "--password-stdin", stdin=PASSWORD + "\n")
        async with browser(hub) as b:
            status, body, _ = await b.sign_in(email="ops@example.org", password=PASSWORD, tenant="default")
            assert status == 200, body
            for _ in range(2):  # each time the token is due: renewed, its refresh token rotated
                await asyncio.sleep(1.2)
                status, overview = await b.request("GET", "/v1/console/overview")
                assert status == 200, overview
            status, _ = await b.request("POST", "/v1/call", json_body={"action": "echo", "payload": {}})
            assert status == 200
    finally:
        hub.stop()
    with contextlib.closing(sqlite3.connect(state / "tenancy.db")) as db:
        refreshes = db.execute("SELECT count(*) FROM audit WHERE action = 'auth.refresh' AND success = 1").fetchone()
    assert refreshes == (2,)
