"""Authentication, revocation and tenant isolation, on real SQLite files."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest

from daemon.api.admin import AdminApi
from daemon.core.envelope import Credentials, Principal
from daemon.core.errors import Conflict, NotFound, PermissionDenied, Unauthenticated, ValidationError
from daemon.runtime.config import AuthConfig
from daemon.tenancy.authn import Authenticator
from daemon.tenancy.store import TenancyStore


class Clock:
    """Wall clock the test moves by hand; nothing sleeps."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Site:
    state_dir: Path
    store: TenancyStore
    auth: Authenticator
    admin: AdminApi
    clock: Clock
    root: Principal  # the bootstrap super_admin

    async def key(self, raw: str) -> Principal:
        return await self.auth.authenticate(Credentials(api_key=raw), ip="10.0.0.7", user_agent="pytest")

    async def bearer(self, token: str) -> Principal:
        return await self.auth.authenticate(Credentials(bearer=token))

    async def failures(self) -> list[dict[str, Any]]:
        await self.auth.flush_failures()  # tallied per minute: hand this minute's over now
        await self.store.flush_audit()
        return [row for row in await self.store.run(self.store.audit_rows) if not row["success"]]


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    clock = Clock()
    store = TenancyStore(tmp_path, clock=clock)
    await store.start()
    # the recheck runs only when a test calls it, so nothing depends on timing
    auth = Authenticator(store, AuthConfig(), tmp_path, clock=clock, recheck_interval_s=3600)
    await auth.start()
    root_key = await store.run(store.ensure_bootstrap)
    assert root_key is not None
    root = await auth.authenticate(Credentials(api_key=root_key))
    yield Site(tmp_path, store, auth, AdminApi(store, auth, clock=clock), clock, root)
    await auth.aclose()
    await store.aclose()


async def new_key(site: Site, tenant: str, role: str = "user", **fields: Any) -> str:
    answer = await site.admin.create_api_key(site.root, {"tenant": tenant, "role": role, **fields})
    return str(answer["key"])


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


# first start


async def test_first_start_makes_the_default_tenant_and_an_admin_key_once(site: Site) -> None:
    key_file = site.state_dir / "bootstrap-admin.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((site.state_dir / "jwt.secret").stat().st_mode) == 0o600
    assert site.root.tenant_name == "default" and site.root.role == "super_admin"
    assert site.root.plan == "starter"
    assert key_file.read_text().strip().startswith(site.root.subject.removeprefix("key:"))
    assert await site.store.run(site.store.ensure_bootstrap) is None  # a restart prints nothing new
    assert [t.name for t in await site.store.run(site.store.list_tenants)] == ["default"]


# API keys


async def test_a_key_authenticates_as_its_tenant_role_and_rate(site: Site) -> None:
    await site.admin.create_tenant(site.root, {"name": "acme"})
    raw = await new_key(site, "acme", "user", rate_limit="100/min")
    principal = await site.key(raw)
    assert (principal.tenant_name, principal.role, principal.rate_limit) == ("acme", "user", "100/min")
    assert principal.subject.startswith("key:dai_") and principal.auth == "api_key"
    assert "module:use" in principal.permissions
    assert await site.key(raw) is principal  # the second call is served from the cache


async def test_missing_unknown_and_garbage_credentials_are_refused_and_audited(site: Site) -> None:
    with pytest.raises(Unauthenticated, match="missing credentials"):
        await site.auth.authenticate(Credentials())
    with pytest.raises(Unauthenticated, match="invalid API key"):
        await site.key("dai_00000000_" + "x" * 43)
    with pytest.raises(Unauthenticated, match="invalid API key"):
        await site.key("dai_00000001_" + "x" * 43)
    failures = await site.failures()
    # alike failures from one address in one minute are one row with a count
    assert [(row["error"], row["count"]) for row in failures] == [("missing credentials", 1), ("invalid API key", 2)]
    assert failures[1]["actor"] == "several"
    assert (failures[1]["ip"], failures[1]["user_agent"]) == ("10.0.0.7", "pytest")


async def test_a_revoked_key_is_refused_at_once_even_when_cached(site: Site) -> None:
    raw = await new_key(site, "default")
    principal = await site.key(raw)
    await site.admin.revoke_api_key(site.root, None, key_id=principal.subject.removeprefix("key:"))
    with pytest.raises(Unauthenticated, match="revoked"):
        await site.key(raw)


async def test_a_key_revoked_by_the_cli_is_refused_after_the_next_recheck(site: Site) -> None:
    raw = await new_key(site, "default")
    prefix = (await site.key(raw)).subject.removeprefix("key:")

    def cli_revokes() -> None:  # another connection, as `democratic-ai key revoke` has
        other = TenancyStore(site.state_dir)
        try:
            other.revoke_api_key(prefix)
        finally:
            other.close()

    await asyncio.to_thread(cli_revokes)
    assert await site.auth.recheck()  # the daemon's 1 s tick saw data_version move
    with pytest.raises(Unauthenticated, match="revoked"):
        await site.key(raw)
    assert not await site.auth.recheck()  # nothing new since


async def test_an_expired_key_is_refused(site: Site) -> None:
    raw = await new_key(site, "default", expires_at=_iso(site.clock.now + 60))
    assert (await site.key(raw)).role == "user"
    site.clock.advance(61)
    with pytest.raises(Unauthenticated, match="expired"):
        await site.key(raw)


async def test_a_suspended_tenant_is_denied(site: Site) -> None:
    await site.admin.create_tenant(site.root, {"name": "acme"})
    raw = await new_key(site, "acme")
    await site.key(raw)
    await site.store.run(site.store.set_tenant_status, "acme", "suspended")
    assert await site.auth.recheck()
    with pytest.raises(PermissionDenied, match="suspended"):
        await site.key(raw)


async def test_last_use_is_recorded_in_batches(site: Site) -> None:
    raw = await new_key(site, "default")
    await site.key(raw)
    await site.auth.recheck()
    keys = (await site.admin.list_api_keys(site.root))["api_keys"]
    assert [k["last_used_at"] is not None for k in keys] == [True, True]


# JWT


@pytest.fixture
async def alice(site: Site) -> dict[str, Any]:
    await site.admin.create_user(site.root, {"email": "Alice@example.com", "role": "user",
                                             "password": "correct horse"})
    return await site.admin.token(None, {"email": "alice@example.com", "password": "correct horse",
                                         "tenant": "default"})


async def test_a_person_logs_in_and_calls_with_the_access_token(site: Site, alice: dict[str, Any]) -> None:
    assert alice["token_type"] == "Bearer" and alice["expires_in"] == 900
    principal = await site.bearer(alice["access_token"])
    assert principal.auth == "jwt" and principal.role == "user" and principal.tenant_name == "default"
    assert principal.subject == f"user:{principal.user_id}"
    assert set(claims_of(alice["access_token"])) >= {"exp", "iat", "jti", "sub", "tenant_id", "role", "typ"}


async def test_a_wrong_password_is_refused_and_audited(site: Site, alice: dict[str, Any]) -> None:
    with pytest.raises(Unauthenticated, match="bad email, password or tenant"):
        await site.admin.token(None, {"email": "alice@example.com", "password": "wrong", "tenant": "default"},
                               ip="10.1.1.1")
    with pytest.raises(Unauthenticated, match="bad email, password or tenant"):
        await site.admin.token(None, {"email": "bob@example.com", "password": "whatever", "tenant": "default"})
    with pytest.raises(ValidationError, match="password"):
        await site.admin.token(None, {"email": "alice@example.com", "tenant": "default"})
    failures = await site.failures()
    assert [(row["action"], row["ip"]) for row in failures] == [("auth.login", "10.1.1.1"), ("auth.login", "")]


async def test_refresh_rotates_and_a_refresh_chain_goes_on(site: Site, alice: dict[str, Any]) -> None:
    second = await site.admin.refresh(None, {"refresh_token": alice["refresh_token"]})
    assert second["refresh_token"] != alice["refresh_token"]
    assert (await site.bearer(second["access_token"])).role == "user"
    third = await site.admin.refresh(None, {"refresh_token": second["refresh_token"]})
    assert (await site.bearer(third["access_token"])).role == "user"
    # one login, one family: every token of the chain says so
    assert claims_of(third["refresh_token"])["fam"] == claims_of(alice["access_token"])["fam"]


async def test_a_reused_refresh_token_revokes_the_rest_of_its_chain(site: Site, alice: dict[str, Any]) -> None:
    """The OAuth 2.0 Security BCP's reuse detection: a rotated refresh token presented again means
    someone holds a copy, so whatever was issued from it stops working too."""
    second = await site.admin.refresh(None, {"refresh_token": alice["refresh_token"]})
    await site.bearer(second["access_token"])  # cached: the revocation must reach the cache too
    with pytest.raises(Unauthenticated, match="already used or revoked"):
        await site.admin.refresh(None, {"refresh_token": alice["refresh_token"]})
    with pytest.raises(Unauthenticated, match="revoked"):
        await site.admin.refresh(None, {"refresh_token": second["refresh_token"]})
    with pytest.raises(Unauthenticated, match="revoked"):
        await site.bearer(second["access_token"])
    # another login of the same person is another family, untouched
    other = await site.admin.token(None, {"email": "alice@example.com", "password": "correct horse",
                                          "tenant": "default"})
    assert (await site.bearer(other["access_token"])).role == "user"
    assert await site.admin.refresh(None, {"refresh_token": other["refresh_token"]})


async def test_a_token_revoked_by_jti_is_refused_even_when_cached(site: Site, alice: dict[str, Any]) -> None:
    await site.bearer(alice["access_token"])
    jti = claims_of(alice["access_token"])["jti"]
    answer = await site.admin.revoke(site.root, {"jti": jti})
    assert answer == {"revoked": jti}
    with pytest.raises(Unauthenticated, match="revoked"):
        await site.bearer(alice["access_token"])


async def test_a_holder_revokes_its_own_refresh_token(site: Site, alice: dict[str, Any]) -> None:
    await site.admin.revoke(None, {"token": alice["refresh_token"]})
    with pytest.raises(Unauthenticated, match="already used or revoked"):
        await site.admin.refresh(None, {"refresh_token": alice["refresh_token"]})
    with pytest.raises(PermissionDenied):  # a bare jti needs an administrator
        await site.admin.revoke(None, {"jti": "abc"})


async def test_a_forged_signature_is_refused(site: Site, alice: dict[str, Any]) -> None:
    forged = jwt.encode(claims_of(alice["access_token"]) | {"role": "super_admin"}, b"k" * 32, algorithm="HS256")
    with pytest.raises(Unauthenticated, match="signature"):
        await site.bearer(forged)


async def test_an_unsigned_alg_none_token_is_refused(site: Site, alice: dict[str, Any]) -> None:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims_of(alice['access_token']))}."
    with pytest.raises(Unauthenticated, match="algorithm"):
        await site.bearer(unsigned)


async def test_an_expired_access_token_is_refused(site: Site, alice: dict[str, Any]) -> None:
    await site.bearer(alice["access_token"])
    site.clock.advance(901)
    with pytest.raises(Unauthenticated, match="expired"):
        await site.bearer(alice["access_token"])


async def test_tokens_are_only_good_for_their_own_use(site: Site, alice: dict[str, Any]) -> None:
    with pytest.raises(Unauthenticated, match="'refresh' token cannot be used here"):
        await site.bearer(alice["refresh_token"])
    with pytest.raises(Unauthenticated, match="'access' token cannot be used here"):
        await site.admin.refresh(None, {"refresh_token": alice["access_token"]})
    secret = bytes.fromhex((site.state_dir / "jwt.secret").read_text())
    no_jti = claims_of(alice["access_token"])
    del no_jti["jti"]
    with pytest.raises(Unauthenticated, match="jti"):
        await site.bearer(jwt.encode(no_jti, secret, algorithm="HS256"))


async def test_a_deleted_person_can_no_longer_log_in_or_use_tokens(site: Site, alice: dict[str, Any]) -> None:
    principal = await site.bearer(alice["access_token"])
    assert principal.user_id is not None
    deleted = await site.admin.delete_user(site.root, None, user_id=principal.user_id)
    assert deleted["user"]["email"] is None and deleted["user"]["status"] == "deleted"
    assert await site.auth.recheck()  # the deletion bumped the store's generation
    with pytest.raises(Unauthenticated, match="no longer active"):
        await site.bearer(alice["access_token"])
    with pytest.raises(Unauthenticated):
        await site.admin.token(None, {"email": "alice@example.com", "password": "correct horse",
                                      "tenant": "default"})
    export = await site.store.run(site.store.export_tenant, "default")
    assert [u["email"] for u in export["users"] if u["id"] == principal.user_id] == [None]
    assert "hash" not in json.dumps(export)


def test_authorize_names_the_missing_permission(site: Site) -> None:
    viewer = Principal("t", "acme", "starter", "viewer", frozenset({"module:read"}), "key:dai_x")
    with pytest.raises(PermissionDenied, match="module:use") as raised:
        site.auth.authorize(viewer, "module:use")
    assert raised.value.details["permission"] == "module:use"
    site.auth.authorize(viewer, "module:read")


# tenant isolation and RBAC in the admin API


@dataclass
class TwoTenants:
    a_admin: Principal
    b_key_prefix: str
    b_user_id: str


@pytest.fixture
async def two(site: Site) -> TwoTenants:
    for name in ("a", "b"):
        await site.admin.create_tenant(site.root, {"name": name})
    a_admin = await site.key(await new_key(site, "a", "tenant_admin"))
    b_key = await site.key(await new_key(site, "b", "user"))
    b_user = await site.admin.create_user(site.root, {"tenant": "b", "email": "bo@b.example", "role": "user"})
    return TwoTenants(a_admin, b_key.subject.removeprefix("key:"), b_user["user"]["id"])


async def test_a_tenant_admin_sees_only_its_own_tenant(site: Site, two: TwoTenants) -> None:
    tenants = (await site.admin.list_tenants(two.a_admin))["tenants"]
    assert [t["name"] for t in tenants] == ["a"]
    keys = (await site.admin.list_api_keys(two.a_admin))["api_keys"]
    assert all(k["tenant_id"] == two.a_admin.tenant_id for k in keys) and len(keys) == 1
    assert (await site.admin.list_users(two.a_admin))["users"] == []


async def test_another_tenants_things_do_not_exist_for_a_tenant_admin(site: Site, two: TwoTenants) -> None:
    with pytest.raises(NotFound):
        await site.admin.list_api_keys(two.a_admin, {"tenant": "b"})
    with pytest.raises(NotFound):
        await site.admin.list_users(two.a_admin, {"tenant": "b"})
    with pytest.raises(NotFound):
        await site.admin.get_tenant(two.a_admin, None, tenant_id="b")
    with pytest.raises(NotFound):
        await site.admin.revoke_api_key(two.a_admin, None, key_id=two.b_key_prefix)
    with pytest.raises(NotFound):
        await site.admin.delete_user(two.a_admin, None, user_id=two.b_user_id)
    with pytest.raises(NotFound):  # even with tenant "b" named: it does not exist for them
        await site.admin.create_api_key(two.a_admin, {"tenant": "b", "role": "user"})
    # and tenant b is untouched
    b_keys = (await site.admin.list_api_keys(site.root, {"tenant": "b"}))["api_keys"]
    assert [k["revoked_at"] for k in b_keys] == [None]
    failures = await site.failures()
    assert {row["action"] for row in failures} >= {"api_key.revoke", "user.delete"}
    assert all(row["actor"] == two.a_admin.subject for row in failures)


async def test_super_admin_sees_every_tenant(site: Site, two: TwoTenants) -> None:
    tenants = (await site.admin.list_tenants(site.root))["tenants"]
    assert sorted(t["name"] for t in tenants) == ["a", "b", "default"]
    answer = await site.admin.revoke_api_key(site.root, None, key_id=two.b_key_prefix)
    assert answer["api_key"]["revoked_at"] is not None


async def test_tenant_admins_cannot_make_tenants_or_super_admins(site: Site, two: TwoTenants) -> None:
    with pytest.raises(PermissionDenied, match="tenant:create"):
        await site.admin.create_tenant(two.a_admin, {"name": "c"})
    with pytest.raises(PermissionDenied, match="cannot grant role super_admin"):
        await site.admin.create_user(two.a_admin, {"email": "x@a.example", "role": "super_admin"})
    with pytest.raises(PermissionDenied):
        await site.admin.create_api_key(two.a_admin, {"role": "super_admin"})


async def test_a_new_user_gets_a_generated_password_once(site: Site, two: TwoTenants) -> None:
    made = await site.admin.create_user(two.a_admin, {"email": "dev@a.example", "role": "developer"})
    assert len(made["password"]) >= 16 and made["user"]["tenant_id"] == two.a_admin.tenant_id
    tokens = await site.admin.token(None, {"email": "dev@a.example", "password": made["password"], "tenant": "a"})
    assert (await site.bearer(tokens["access_token"])).role == "developer"
    listed = (await site.admin.list_users(two.a_admin))["users"]
    assert "password" not in listed[0] and "password_hash" not in listed[0]
    with pytest.raises(Conflict):
        await site.admin.create_user(two.a_admin, {"email": "DEV@a.example", "role": "viewer"})


async def test_bad_bodies_name_the_field(site: Site) -> None:
    with pytest.raises(ValidationError, match="name"):
        await site.admin.create_tenant(site.root, {})
    with pytest.raises(ValidationError, match="name"):
        await site.admin.create_tenant(site.root, {"name": "no spaces please"})
    with pytest.raises(ValidationError, match="rate_limit"):
        await site.admin.create_api_key(site.root, {"rate_limit": "5/fortnight"})
    with pytest.raises(ValidationError, match="role"):
        await site.admin.create_api_key(site.root, {"role": "god"})
    with pytest.raises(ValidationError, match="email"):
        await site.admin.create_user(site.root, {"email": "nobody", "role": "user"})
    with pytest.raises(ValidationError, match="password"):
        await site.admin.create_user(site.root, {"email": "a@b.c", "role": "user", "password": "short"})
    with pytest.raises(Conflict):
        await site.admin.create_tenant(site.root, {"name": "default"})


async def test_a_developer_manages_only_its_own_keys(site: Site) -> None:
    dev = await site.key(await new_key(site, "default", "developer"))
    other_prefix = (await site.key(await new_key(site, "default", "user"))).subject.removeprefix("key:")
    made = await site.admin.create_api_key(dev, {"role": "developer"})
    assert made["api_key"]["created_by"] == dev.subject
    with pytest.raises(PermissionDenied, match="cannot grant role user"):
        await site.admin.create_api_key(dev, {"role": "user"})
    listed = (await site.admin.list_api_keys(dev))["api_keys"]
    assert sorted(k["prefix"] for k in listed) == sorted([dev.subject[4:], made["api_key"]["prefix"]])
    with pytest.raises(PermissionDenied, match="api_key:delete"):
        await site.admin.revoke_api_key(dev, None, key_id=other_prefix)
    await site.admin.revoke_api_key(dev, None, key_id=made["api_key"]["prefix"])
    with pytest.raises(Unauthenticated, match="revoked"):
        await site.key(made["key"])


def _iso(ts: float) -> str:
    from daemon.tenancy.records import iso

    return iso(ts)


async def test_an_anonymous_revoke_takes_only_a_signed_token_and_leaves_counts_not_rows(
        site: Site, alice: dict[str, Any]) -> None:
    forged = jwt.encode(claims_of(alice["access_token"]), b"k" * 32, algorithm="HS256")
    for junk in ("0123456789abcdef", "a.b.c", forged):
        with pytest.raises(Unauthenticated, match="not a JWT this hub issued"):
            await site.admin.revoke(None, {"token": junk}, ip="203.0.113.5")
    assert await site.store.run(site.store._all, "SELECT * FROM revoked_tokens") == []
    rows = [row for row in await site.failures() if row["action"] == "auth.revoke"]
    assert [(row["ip"], row["count"]) for row in rows] == [("203.0.113.5", 3)]
    # the token itself, signed by this hub, is still revocable by whoever holds it
    assert (await site.admin.revoke(None, {"token": alice["access_token"]}))["revoked"]
    with pytest.raises(Unauthenticated, match="revoked"):
        await site.bearer(alice["access_token"])


async def test_a_login_naming_no_tenant_finds_the_one_tenant_of_the_email(site: Site, alice: dict[str, Any]) -> None:
    """The console's sign-in: one indexed query finds the tenant; none or several fail like a bad password."""
    pair = await site.auth.login("alice@example.com", "correct horse", None)
    assert (await site.bearer(pair["access_token"])).tenant_name == "default"
    await site.admin.create_tenant(site.root, {"name": "second"})
    await site.admin.create_user(site.root, {"tenant": "second", "email": "alice@example.com", "role": "user",
                                             "password": "correct horse"})
    assert await site.store.run(site.store.login_tenant, "alice@example.com") is None, "two tenants: not unique"
    with pytest.raises(Unauthenticated, match="bad email, password or tenant"):
        await site.auth.login("alice@example.com", "correct horse", None)
    plan = await site.store.run(lambda: site.store._all(
        "EXPLAIN QUERY PLAN SELECT id FROM users WHERE email = ?", ("alice@example.com",)))
    assert any("users_email" in str(row) for row in plan), "an index, not a scan of every user"


async def test_an_unknown_email_costs_a_password_check_too(site: Site, alice: dict[str, Any]) -> None:
    """With no tenant named, an e-mail nobody has takes as long as a wrong password: timing tells nothing."""
    async def took(email: str) -> float:
        began = time.perf_counter()
        with pytest.raises(Unauthenticated):
            await site.auth.login(email, "wrong horse", None)
        return time.perf_counter() - began

    await took("alice@example.com")  # the dummy hash is made once, at the first miss
    known = min([await took("alice@example.com") for _ in range(3)])
    unknown = min([await took("nobody@example.com") for _ in range(3)])
    assert unknown > known / 3, (unknown, known)
