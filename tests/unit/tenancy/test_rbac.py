"""The seed's five roles, wildcards and own/self narrowing."""

from __future__ import annotations

import pytest

from daemon.tenancy.rbac import ROLE_NAMES, ROLES, allows, can_grant, is_cross_tenant, permissions_for


def test_the_five_roles_of_the_seed() -> None:
    assert ROLE_NAMES == ("super_admin", "tenant_admin", "developer", "user", "viewer")
    assert permissions_for("super_admin") == {"*"}
    assert permissions_for("tenant_admin") == {
        "tenant:read", "tenant:update", "user:create", "user:read", "user:update", "user:delete",
        "module:*", "api_key:*", "billing:read", "console:read",
    }
    assert permissions_for("developer") == {
        "tenant:read", "user:read:self", "user:update:self", "module:create", "module:read",
        "module:update", "module:delete:own", "api_key:create:own", "api_key:read:own",
        "api_key:delete:own", "console:read",
    }
    assert permissions_for("user") == {
        "tenant:read", "user:read:self", "user:update:self", "module:read", "module:use",
        "api_key:read:own",
    }
    assert permissions_for("viewer") == {"tenant:read", "user:read:self", "module:read", "console:read"}


def test_every_role_but_user_may_watch_the_console() -> None:
    assert [r for r in ROLE_NAMES if allows(ROLES[r], "console:read")] == [
        "super_admin", "tenant_admin", "developer", "viewer"]


def test_an_unknown_role_is_named_in_the_error() -> None:
    with pytest.raises(KeyError, match="god"):
        permissions_for("god")


def test_super_admin_may_do_anything() -> None:
    for wanted in ("tenant:create", "module:use", "api_key:delete", "anything:at:all"):
        assert allows(ROLES["super_admin"], wanted)


def test_resource_wildcards_cover_every_action_and_its_narrowing() -> None:
    admin = ROLES["tenant_admin"]
    assert allows(admin, "module:use")  # module:* - a tenant admin may call capabilities
    assert allows(admin, "module:delete:own")
    assert allows(admin, "api_key:create")
    assert not allows(admin, "tenant:create")
    assert not allows(admin, "billing:update")


def test_a_broad_grant_covers_its_own_and_self_forms_but_not_the_reverse() -> None:
    assert allows({"user:read"}, "user:read:self")
    assert allows({"api_key:delete"}, "api_key:delete:own")
    developer = ROLES["developer"]
    assert allows(developer, "api_key:delete:own")
    assert not allows(developer, "api_key:delete")  # someone else's key
    assert allows(developer, "user:read:self")
    assert not allows(developer, "user:read")


def test_attach_and_call_permissions_as_the_seed_has_them() -> None:
    # attaching a remote module: module:create
    assert [r for r in ROLE_NAMES if allows(ROLES[r], "module:create")] == [
        "super_admin", "tenant_admin", "developer"]
    # calling a capability: module:use - the seed leaves developers out
    assert [r for r in ROLE_NAMES if allows(ROLES[r], "module:use")] == ["super_admin", "tenant_admin", "user"]


def test_nobody_grants_more_than_they_hold() -> None:
    assert can_grant(ROLES["super_admin"], "super_admin")
    assert can_grant(ROLES["tenant_admin"], "tenant_admin")
    assert not can_grant(ROLES["tenant_admin"], "super_admin")
    assert can_grant(ROLES["developer"], "developer")
    assert can_grant(ROLES["developer"], "viewer")
    assert not can_grant(ROLES["developer"], "user")  # a user key carries module:use
    assert not can_grant(ROLES["viewer"], "user")


def test_only_the_star_grant_crosses_tenants() -> None:
    assert is_cross_tenant(ROLES["super_admin"])
    assert not any(is_cross_tenant(ROLES[r]) for r in ROLE_NAMES if r != "super_admin")
