"""Roles and permissions, exactly as the seed design gives them (shared/SEED-NOTES.md).

A permission is ``resource:action`` and may be narrowed to the caller's own things with a
third part, ``:own`` (a resource the caller created) or ``:self`` (the caller's own user
record).  Grants match by:

- ``*``                 everything (super_admin only);
- ``resource:*``        every action on that resource, narrowed or not;
- ``resource:action``   that action, and also its ``:own`` / ``:self`` narrowing;
- the exact string.

So a caller acting on something it owns asks for ``api_key:delete:own`` (which a broad
``api_key:delete`` grant also satisfies), and on anyone else's thing for ``api_key:delete``.

Note on the seed table, kept as it is on purpose: ``developer`` has ``module:create`` (it
may attach a remote module) but not ``module:use`` (it may not call capabilities), and so
it cannot grant a ``user``-role key either, since that key would carry ``module:use``.
Whether developers should also call capabilities is the lead's decision; it is one line
in ``ROLES``.

``console:read`` (the operator console, daemon/console/) is an addition to the seed table:
tenant_admin, developer and viewer watch their own tenant there (super_admin, through ``*``,
the whole hub).  ``user`` does not get it: a user-role key is an application's key for
calling capabilities, not a person's view of the hub.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from types import MappingProxyType

_NARROWINGS = ("own", "self")

ROLES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "super_admin": frozenset({"*"}),
        "tenant_admin": frozenset(
            {
                "tenant:read",
                "tenant:update",
                "user:create",
                "user:read",
                "user:update",
                "user:delete",
                "module:*",
                "api_key:*",
                "billing:read",
                "console:read",
            }
        ),
        "developer": frozenset(
            {
                "tenant:read",
                "user:read:self",
                "user:update:self",
                "module:create",
                "module:read",
                "module:update",
                "module:delete:own",
                "api_key:create:own",
                "api_key:read:own",
                "api_key:delete:own",
                "console:read",
            }
        ),
        "user": frozenset(
            {
                "tenant:read",
                "user:read:self",
                "user:update:self",
                "module:read",
                "module:use",
                "api_key:read:own",
            }
        ),
        "viewer": frozenset({"tenant:read", "user:read:self", "module:read", "console:read"}),
    }
)

ROLE_NAMES: tuple[str, ...] = tuple(ROLES)


def permissions_for(role: str) -> frozenset[str]:
    """The permission set of ``role``; ``KeyError`` names an unknown role."""
    try:
        return ROLES[role]
    except KeyError:
        raise KeyError(f"unknown role {role!r}; roles are {', '.join(ROLE_NAMES)}") from None


def allows(permissions: Collection[str], wanted: str) -> bool:
    """True when ``permissions`` grant ``wanted`` (see the module docstring for the rules)."""
    granted = permissions
    if "*" in granted or wanted in granted:
        return True
    parts = wanted.split(":")
    if len(parts) >= 2 and f"{parts[0]}:*" in granted:
        return True
    # a broad grant covers its narrowed form: user:read allows user:read:self
    return len(parts) == 3 and parts[2] in _NARROWINGS and f"{parts[0]}:{parts[1]}" in granted


def can_grant(permissions: Iterable[str], role: str) -> bool:
    """True when a caller holding ``permissions`` may hand out ``role`` (no escalation)."""
    granted = frozenset(permissions)
    return all(allows(granted, wanted) for wanted in permissions_for(role))


def is_cross_tenant(permissions: Iterable[str]) -> bool:
    """Only the ``*`` grant (super_admin) reaches beyond the caller's own tenant."""
    return "*" in permissions
