"""Tenants, people and keys through the admin routes: isolation, tokens, revocation."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.cli import run_cli
from tests.support.hubhttp import send
from tests.support.hubproc import HubProcess


async def request(hub: HubProcess, method: str, path: str, *, key: str | None = None, token: str | None = None,
                  json_body: object = None) -> tuple[int, dict]:
    status, body, _ = await send(hub.url, method, path, key=key, token=token, json_body=json_body)
    return status, body


@pytest.fixture(scope="module")
def two_tenants(hub: HubProcess) -> dict[str, str]:
    """Tenants acme and globex, each with a tenant_admin key and a user key."""
    keys = {}
    for tenant in ("acme", "globex"):
        assert run_cli(hub.state_dir, "tenant", "create", tenant).returncode == 0
        for role in ("tenant_admin", "user"):
            created = run_cli(hub.state_dir, "key", "create", "--tenant", tenant, "--role", role)
            assert created.returncode == 0, created.stderr
            keys[f"{tenant}:{role}"] = created.stdout.strip().splitlines()[0]
    return keys


async def test_a_tenant_admin_sees_only_its_own_tenant(hub: HubProcess, two_tenants: dict[str, str]) -> None:
    status, body = await request(hub, "GET", "/v1/tenants", key=two_tenants["acme:tenant_admin"])
    assert status == 200
    assert [t["name"] for t in body["tenants"]] == ["acme"]
    status, body = await request(hub, "GET", "/v1/tenants", key=hub.admin_key)
    assert {"default", "acme", "globex"} <= {t["name"] for t in body["tenants"]}


async def test_another_tenants_keys_cannot_be_seen_or_revoked(hub: HubProcess, two_tenants: dict[str, str]) -> None:
    status, body = await request(hub, "GET", "/v1/api-keys", key=two_tenants["globex:tenant_admin"])
    assert status == 200
    globex_prefixes = {k["prefix"] for k in body["api_keys"]}
    acme_user_prefix = two_tenants["acme:user"][:12]
    assert acme_user_prefix not in globex_prefixes
    status, body = await request(hub, "DELETE", f"/v1/api-keys/{acme_user_prefix}",
                                 key=two_tenants["globex:tenant_admin"])
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"
    # the acme key still works
    status, _ = await request(hub, "POST", "/v1/call", key=two_tenants["acme:user"],
                              json_body={"action": "echo", "payload": {}})
    assert status == 200


async def test_a_user_key_cannot_administer(hub: HubProcess, two_tenants: dict[str, str]) -> None:
    status, body = await request(hub, "POST", "/v1/tenants", key=two_tenants["acme:user"], json_body={"name": "evil"})
    assert status == 403 and body["error"]["code"] == "PERMISSION_DENIED"


async def test_a_person_logs_in_calls_refreshes_and_revokes(hub: HubProcess, two_tenants: dict[str, str]) -> None:
    created = run_cli(hub.state_dir, "user", "create", "--tenant", "acme", "ann@acme.example", "--role", "user",
                      "--password-stdin", stdin="correct horse battery staple\n")
    assert created.returncode == 0, created.stderr
    status, tokens = await request(hub, "POST", "/v1/auth/token", json_body={
        "email": "ann@acme.example", "password": "correct horse battery staple", "tenant": "acme"})
    assert status == 200, tokens
    status, body = await request(hub, "POST", "/v1/call", token=tokens["access_token"],
                                 json_body={"action": "echo", "payload": {"by": "ann"}})
    assert status == 200 and body["result"] == {"by": "ann"}
    status, fresh = await request(hub, "POST", "/v1/auth/refresh", json_body={"refresh_token": tokens["refresh_token"]})
    assert status == 200
    # a refresh token works once (rotation)
    status, body = await request(hub, "POST", "/v1/auth/refresh", json_body={"refresh_token": tokens["refresh_token"]})
    assert status == 401
    status, _ = await request(hub, "POST", "/v1/auth/revoke", json_body={"token": fresh["access_token"]})
    assert status == 200
    status, body = await request(hub, "POST", "/v1/call", token=fresh["access_token"],
                                 json_body={"action": "echo", "payload": {}})
    assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED"
    status, body = await request(hub, "POST", "/v1/auth/token", json_body={
        "email": "ann@acme.example", "password": "wrong", "tenant": "acme"})
    assert status == 401


async def test_a_key_revoked_from_the_cli_stops_working_in_the_running_hub(hub: HubProcess,
                                                                          two_tenants: dict[str, str]) -> None:
    created = run_cli(hub.state_dir, "key", "create", "--tenant", "globex", "--role", "user")
    key = created.stdout.strip().splitlines()[0]
    status, _ = await request(hub, "POST", "/v1/call", key=key, json_body={"action": "echo", "payload": {}})
    assert status == 200  # now cached in the hub
    assert run_cli(hub.state_dir, "key", "revoke", key[:12]).returncode == 0
    for _ in range(60):
        status, body = await request(hub, "POST", "/v1/call", key=key, json_body={"action": "echo", "payload": {}})
        if status == 401:
            break
        await asyncio.sleep(0.1)
    assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED"


async def test_usage_shows_the_callers_own_tenant(hub: HubProcess, two_tenants: dict[str, str]) -> None:
    _, before = await request(hub, "GET", "/v1/usage", key=two_tenants["globex:tenant_admin"])
    for _ in range(3):
        await request(hub, "POST", "/v1/call", key=two_tenants["globex:user"], json_body={"action": "echo"})
        await request(hub, "POST", "/v1/call", key=two_tenants["acme:user"], json_body={"action": "echo"})
    status, body = await request(hub, "GET", "/v1/usage", key=two_tenants["globex:tenant_admin"])
    assert status == 200, body
    assert body["tenant"] == "globex" and body["currency"] == "JPY"
    # acme's calls are not counted here
    assert int(body["usage"]["api_calls"]) - int(before["usage"]["api_calls"]) == 3
    assert body["estimated_invoice"]["lines"][0]["description"] == "Starter Plan - Base Fee"


async def test_an_operator_suspends_and_resumes_a_tenant(hub: HubProcess, two_tenants: dict[str, str]) -> None:
    _, listed = await request(hub, "GET", "/v1/tenants", key=hub.admin_key)
    globex = next(t for t in listed["tenants"] if t["name"] == "globex")
    status, body = await request(hub, "PATCH", f"/v1/tenants/{globex['id']}", key=hub.admin_key,
                                 json_body={"status": "suspended"})
    assert status == 200 and body["tenant"]["status"] == "suspended"
    for _ in range(60):  # a cached key notices within the authenticator's recheck (about a second)
        status, body = await request(hub, "POST", "/v1/call", key=two_tenants["globex:user"],
                                     json_body={"action": "echo", "payload": {}})
        if status == 403:
            break
        await asyncio.sleep(0.1)
    assert status == 403 and body["error"]["code"] == "PERMISSION_DENIED"
    # acme is untouched
    status, _ = await request(hub, "POST", "/v1/call", key=two_tenants["acme:user"], json_body={"action": "echo"})
    assert status == 200
    status, body = await request(hub, "PATCH", f"/v1/tenants/{globex['id']}", key=hub.admin_key,
                                 json_body={"status": "active"})
    assert status == 200
    status, _ = await request(hub, "POST", "/v1/call", key=two_tenants["globex:user"], json_body={"action": "echo"})
    assert status == 200


async def test_a_tenant_admin_cannot_change_its_plan_or_touch_another_tenant(hub: HubProcess,
                                                                            two_tenants: dict[str, str]) -> None:
    _, listed = await request(hub, "GET", "/v1/tenants", key=hub.admin_key)
    ids = {t["name"]: t["id"] for t in listed["tenants"]}
    status, body = await request(hub, "PATCH", f"/v1/tenants/{ids['acme']}", key=two_tenants["acme:tenant_admin"],
                                 json_body={"plan": "enterprise"})
    assert status == 403 and body["error"]["code"] == "PERMISSION_DENIED"
    status, body = await request(hub, "PATCH", f"/v1/tenants/{ids['globex']}", key=two_tenants["acme:tenant_admin"],
                                 json_body={"status": "suspended"})
    assert status == 404
    status, body = await request(hub, "PATCH", f"/v1/tenants/{ids['acme']}", key=hub.admin_key,
                                 json_body={"status": "sleeping"})
    assert status == 400 and body["error"]["code"] == "VALIDATION_ERROR"
