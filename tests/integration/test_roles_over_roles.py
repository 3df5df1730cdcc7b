"""Roles over roles: no one acts on a principal whose role it could not grant, and suspension is the operator's.

A tenant_admin manages its tenant's people and keys, but a super_admin in the same tenant
(the bootstrap key lives in tenant ``default``) is above it: it may not revoke that key,
delete that user, or suspend the tenant.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.cli import cli_ok
from tests.support.hubhttp import send
from tests.support.hubproc import HubProcess


async def request(hub: HubProcess, key: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    status, answer, _ = await send(hub.url, method, path, key=key, json_body=body)
    return status, answer


def new_key(hub: HubProcess, role: str, tenant: str = "default") -> str:
    return cli_ok(hub.state_dir, "key", "create", "--tenant", tenant, "--role", role).splitlines()[0]


async def key_id(hub: HubProcess, raw: str) -> str:
    status, body = await request(hub, hub.admin_key, "GET", "/v1/api-keys")
    assert status == 200, body
    return next(k["id"] for k in body["api_keys"] if raw.startswith(k["prefix"]))


async def user_id(hub: HubProcess, email: str) -> str:
    status, body = await request(hub, hub.admin_key, "GET", "/v1/users")
    assert status == 200, body
    return next(u["id"] for u in body["users"] if u["email"] == email)


async def test_a_tenant_admin_cannot_revoke_the_super_admin_key_of_its_tenant(hub: HubProcess) -> None:
    admin = new_key(hub, "tenant_admin")
    status, body = await request(hub, admin, "DELETE", f"/v1/api-keys/{await key_id(hub, hub.admin_key)}")
    assert (status, body["error"]["code"]) == (403, "PERMISSION_DENIED"), body
    assert body["error"]["details"]["role"] == "super_admin"
    status, _ = await request(hub, hub.admin_key, "GET", "/v1/tenants")
    assert status == 200  # the operator's key still works


async def test_a_tenant_admin_still_revokes_keys_it_could_have_granted(hub: HubProcess) -> None:
    admin = new_key(hub, "tenant_admin")
    for role in ("user", "developer", "tenant_admin"):
        victim = new_key(hub, role)
        status, body = await request(hub, admin, "DELETE", f"/v1/api-keys/{await key_id(hub, victim)}")
        assert status == 200, body
        status, _ = await request(hub, victim, "GET", "/v1/capabilities")
        assert status == 401


async def test_a_key_may_always_revoke_itself(hub: HubProcess) -> None:
    developer = new_key(hub, "developer")
    status, body = await request(hub, developer, "DELETE", f"/v1/api-keys/{await key_id(hub, developer)}")
    assert status == 200, body


async def test_a_tenant_admin_cannot_delete_a_super_admin_user(hub: HubProcess) -> None:
    admin = new_key(hub, "tenant_admin")
    cli_ok(hub.state_dir, "user", "create", "--tenant", "default", "root@example.com", "--role", "super_admin")
    cli_ok(hub.state_dir, "user", "create", "--tenant", "default", "dev@example.com", "--role", "developer")
    root = await user_id(hub, "root@example.com")
    status, body = await request(hub, admin, "DELETE", f"/v1/users/{root}")
    assert (status, body["error"]["code"]) == (403, "PERMISSION_DENIED"), body
    assert await user_id(hub, "root@example.com") == root  # still there
    status, body = await request(hub, admin, "DELETE", f"/v1/users/{await user_id(hub, 'dev@example.com')}")
    assert status == 200, body


async def test_suspending_a_tenant_is_the_super_admins_alone(hub: HubProcess) -> None:
    cli_ok(hub.state_dir, "tenant", "create", "umbrella")
    admin = new_key(hub, "tenant_admin", "umbrella")
    status, body = await request(hub, admin, "GET", "/v1/tenants")
    tenant_id = body["tenants"][0]["id"]
    status, body = await request(hub, admin, "PATCH", f"/v1/tenants/{tenant_id}", {"status": "suspended"})
    assert (status, body["error"]["code"]) == (403, "PERMISSION_DENIED"), body
    status, body = await request(hub, admin, "GET", f"/v1/tenants/{tenant_id}")
    assert (status, body["tenant"]["status"]) == (200, "active")
    status, body = await request(hub, hub.admin_key, "PATCH", f"/v1/tenants/{tenant_id}", {"status": "suspended"})
    assert (status, body["tenant"]["status"]) == (200, "suspended")
    for _ in range(200):  # its keys stop within the authenticator's recheck tick (about a second)
        status, body = await request(hub, admin, "GET", "/v1/tenants")
        if status == 403:
            break
        await asyncio.sleep(0.05)
    assert (status, body["error"]["code"]) == (403, "PERMISSION_DENIED")
    status, body = await request(hub, hub.admin_key, "PATCH", f"/v1/tenants/{tenant_id}", {"status": "active"})
    assert (status, body["tenant"]["status"]) == (200, "active")
